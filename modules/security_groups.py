"""The five security groups of the design and every rule between them.

Each rule is its own ``aws_vpc_security_group_ingress_rule`` / ``..._egress_rule`` resource:
inline rules synthesize with null fields that hide open ports from scanners such as checkov.
The tables below are the design's table; a test asserts they are all that is open.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.cdk import (Construct, SecurityGroup, VpcSecurityGroupEgressRule,
                      VpcSecurityGroupIngressRule)
from typing import Optional

from core.settings import (APP_PORT, ELASTICSEARCH_PORT, HEALTH_AGENT_PORT, HTTP_PORT,
                           HTTPS_PORT, KIBANA_PORT, LB_HEALTH_PORT, NFS_PORT, POSTGRES_PORT)

INTERNET = "internet"
ADMIN = "admin"
NLB = "nlb"


@dataclass(frozen=True)
class Rule:
    """One allowed TCP port to or from a peer: a group ("lb", "app", ...), INTERNET or ADMIN."""

    port: int
    peer: str
    description: str


INGRESS: dict[str, list[Rule]] = {
    "lb": [Rule(HTTP_PORT, INTERNET, "HTTP from the internet, and ACME HTTP-01 challenges"),
           Rule(HTTPS_PORT, INTERNET, "HTTPS from the internet")],
    "app": [Rule(APP_PORT, "lb", "App traffic from the load balancer"),
            # Not in the seed's table: the health agent lets a host leave the load balancer
            # by failing Caddy's active health check, with no Caddy reload (zero downtime).
            Rule(HEALTH_AGENT_PORT, "lb", "Caddy active health checks to the health agent")],
    "db": [Rule(POSTGRES_PORT, "app", "PostgreSQL from the app hosts")],
    # The seed names "SG-SB", a group it never defines; the one NFS client in the design is
    # the daily backup taken on DB-01, so the source is SG-DB.
    "nfs": [Rule(NFS_PORT, "db", "NFS from DB-01 for the daily backups")],
    "log": [Rule(ELASTICSEARCH_PORT, "app", "Filebeat on the app hosts to Elasticsearch"),
            Rule(KIBANA_PORT, ADMIN, "Kibana from the administrator network (admin_cidr)")],
}

# With two LBs, the one rule added to SG-LB: the Network Load Balancer's health checks, which
# come from its node's address in the public subnet (internet-facing NLBs take addresses
# AWS chooses there). Client traffic keeps the clients' addresses (client IP preservation)
# and arrives on 80 and 443, which are open to the internet already.
NLB_INGRESS = [Rule(LB_HEALTH_PORT, NLB,
                    "Network Load Balancer health checks from its node in the public subnet")]

# Every host reaches AWS Systems Manager, container registries and ACME over HTTPS, and the
# Ubuntu archive over HTTP (its mirrors serve plain HTTP; packages are signed). DNS to the VPC
# resolver and NTP to the Amazon Time Sync Service are not filtered by security groups.
_OUTBOUND_WEB = [Rule(HTTPS_PORT, INTERNET, "HTTPS out: SSM, container images, packages"),
                 Rule(HTTP_PORT, INTERNET, "HTTP out: Ubuntu package archive")]

EGRESS: dict[str, list[Rule]] = {
    "lb": [Rule(APP_PORT, "app", "Proxy requests to the app hosts"),
           Rule(HEALTH_AGENT_PORT, "app", "Active health checks of the app hosts"),
           *_OUTBOUND_WEB],
    "app": [Rule(POSTGRES_PORT, "db", "App queries to PostgreSQL"),
            Rule(ELASTICSEARCH_PORT, "log", "Filebeat ships logs to Elasticsearch"),
            *_OUTBOUND_WEB],
    "db": [Rule(NFS_PORT, "nfs", "Daily backups to NFS-01"), *_OUTBOUND_WEB],
    "nfs": list(_OUTBOUND_WEB),
    "log": list(_OUTBOUND_WEB),
}


@dataclass(frozen=True)
class SecurityGroupsConfig:
    """Inputs of :class:`SecurityGroups`.

    name: prefix of the group names. admin_cidr: the only source allowed to reach Kibana.
    nlb_subnet_cidr: the subnet of the Network Load Balancer in front of the LBs, whose
        health checks SG-LB admits; ``None`` when there is no NLB (one LB).
    """

    name: str
    vpc_id: str
    admin_cidr: str
    nlb_subnet_cidr: Optional[str] = None


class SecurityGroups(Construct):
    """SG-LB, SG-APP, SG-DB, SG-NFS and SG-LOG; ``ids[role]`` is each group's ID."""

    def __init__(self, scope: Construct, id: str, config: SecurityGroupsConfig):
        super().__init__(scope, id)
        self.ids: dict[str, str] = {}
        for role in INGRESS:
            group = SecurityGroup(
                self, role, name=f"{config.name}-{role}", vpc_id=config.vpc_id,
                description=f"SG-{role.upper()}: {role.upper()} hosts of {config.name}",
                tags={"Name": f"SG-{role.upper()}"})
            self.ids[role] = group.id
        cidrs = {INTERNET: "0.0.0.0/0", ADMIN: config.admin_cidr}
        ingress = INGRESS
        if config.nlb_subnet_cidr:
            cidrs[NLB] = config.nlb_subnet_cidr
            ingress = {**INGRESS, "lb": INGRESS["lb"] + NLB_INGRESS}
        for direction, table, rule_class in (("in", ingress, VpcSecurityGroupIngressRule),
                                             ("out", EGRESS, VpcSecurityGroupEgressRule)):
            for role, rules in table.items():
                for rule in rules:
                    peer = ({"cidr_ipv4": cidrs[rule.peer]} if rule.peer in cidrs
                            else {"referenced_security_group_id": self.ids[rule.peer]})
                    rule_class(self, f"{role}-{direction}-{rule.port}-{rule.peer}",
                               security_group_id=self.ids[role], ip_protocol="tcp",
                               from_port=rule.port, to_port=rule.port,
                               description=rule.description, **peer)
