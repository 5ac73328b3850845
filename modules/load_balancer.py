"""The AWS Network Load Balancer in front of LB-01 and LB-02 (``load_balancer.count: 2``).

TCP pass-through on 80 and 443: Caddy on each LB still terminates TLS with its automatic
certificate, and sees the client's address (client IP preservation, instance targets). The
NLB holds the environment's Elastic IP through its subnet mapping, so the address DNS points
at is the one LB-01 held alone with ``count: 1``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from core.cdk import (Construct, Lb, LbListener, LbListenerDefaultAction, LbSubnetMapping,
                      LbTargetGroup, LbTargetGroupAttachment)
from core.settings import (HTTP_PORT, HTTPS_PORT, LB_DEREGISTRATION_DELAY_SECONDS,
                           LB_HEALTH_INTERVAL_SECONDS, LB_HEALTH_PATH, LB_HEALTH_PORT,
                           LB_HEALTH_THRESHOLD, LB_HEALTH_TIMEOUT_SECONDS)

# Elastic Load Balancing names: at most 32 letters, digits and hyphens, no hyphen at either
# end, and a load balancer's may not start with "internal-" (documented; botocore has none).
MAX_NAME_LENGTH = 32


def elb_name(kind: str, prefix: str) -> str:
    """``<kind>-<prefix>`` within ELB's 32 characters, shortened with a digest if needed.

    The kind comes first so that no project name makes the name start with ``internal-``.
    """
    name = f"{kind}-{prefix}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:6]
    head = name[:MAX_NAME_LENGTH - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


@dataclass(frozen=True)
class NetworkLoadBalancerConfig:
    """Inputs of :class:`NetworkLoadBalancer`.

    name: prefix of the NLB's and target groups' names (shortened to ELB's limits).
    vpc_id, subnet_id: where the NLB's node lives: the public subnet of the LB hosts.
    allocation_id: the Elastic IP the NLB answers on (the environment's public address).
    targets: instance ID of each LB host, by host name (LB-01, LB-02).
    ports: TCP ports passed through to every LB unchanged.
    health_port, health_path: what each LB's Caddy answers itself (HTTP 200).
    health_interval_seconds, health_timeout_seconds, health_threshold: the NLB's probe; an LB
        is out after ``health_threshold`` failed probes and back after as many good ones.
    deregistration_delay_seconds: how long a deregistered LB keeps its open connections.
    """

    name: str
    vpc_id: str
    subnet_id: str
    allocation_id: str
    targets: dict[str, str]
    ports: tuple[int, ...] = (HTTP_PORT, HTTPS_PORT)
    health_port: int = LB_HEALTH_PORT
    health_path: str = LB_HEALTH_PATH
    health_interval_seconds: int = LB_HEALTH_INTERVAL_SECONDS
    health_timeout_seconds: int = LB_HEALTH_TIMEOUT_SECONDS
    health_threshold: int = LB_HEALTH_THRESHOLD
    deregistration_delay_seconds: int = LB_DEREGISTRATION_DELAY_SECONDS


class NetworkLoadBalancer(Construct):
    """Internet-facing NLB, one TCP listener and target group per port, every LB a target."""

    def __init__(self, scope: Construct, id: str, config: NetworkLoadBalancerConfig):
        super().__init__(scope, id)
        # One subnet, one zone: every host of the design lives in one availability zone, and
        # a second zone for the NLB alone would only add a path to LBs that are not there.
        balancer = Lb(self, "balancer", name=elb_name("nlb", config.name),
                      load_balancer_type="network", internal=False,
                      # One zone today, so no cross-zone traffic to pay for; a second zone
                      # added later then balances across both LBs from the first day.
                      enable_cross_zone_load_balancing=True,
                      subnet_mapping=[LbSubnetMapping(subnet_id=config.subnet_id,
                                                      allocation_id=config.allocation_id)],
                      tags={"Name": elb_name("nlb", config.name)})
        self.arn = balancer.arn
        self.target_group_arns: dict[int, str] = {}
        for port in config.ports:
            group = LbTargetGroup(
                self, f"tcp-{port}", name=elb_name(f"tcp{port}", config.name),
                port=port, protocol="TCP", target_type="instance", vpc_id=config.vpc_id,
                preserve_client_ip="true",
                deregistration_delay=str(config.deregistration_delay_seconds),
                # A deregistered LB's connections are left to end by themselves (keep-alive
                # clients see no reset); draining waits for the delay above.
                connection_termination=False,
                health_check={
                    "protocol": "HTTP", "port": str(config.health_port),
                    "path": config.health_path, "matcher": "200",
                    "interval": config.health_interval_seconds,
                    "timeout": config.health_timeout_seconds,
                    "healthy_threshold": config.health_threshold,
                    "unhealthy_threshold": config.health_threshold},
                tags={"Name": elb_name(f"tcp{port}", config.name)})
            self.target_group_arns[port] = group.arn
            LbListener(self, f"listener-{port}", load_balancer_arn=balancer.arn, port=port,
                       protocol="TCP",
                       default_action=[LbListenerDefaultAction(
                           type="forward", target_group_arn=group.arn)])
            for host, instance_id in sorted(config.targets.items()):
                LbTargetGroupAttachment(self, f"{host}-{port}", target_group_arn=group.arn,
                                        target_id=instance_id, port=port)
