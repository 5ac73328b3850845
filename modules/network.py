"""The VPC: one public and one private subnet in one availability zone."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from core.cdk import (CloudwatchLogGroup, Construct, DataAwsIamPolicyDocument,
                      DefaultNetworkAcl, DefaultNetworkAclEgress, DefaultNetworkAclIngress,
                      DefaultRouteTable, DefaultSecurityGroup, Eip, FlowLog,
                      IamRole, IamRolePolicy, InternetGateway, NatGateway, Route, RouteTable,
                      RouteTableAssociation, Subnet, Vpc)

ANYWHERE = "0.0.0.0/0"
# The rule AWS puts in a default network ACL, each way; security groups do the filtering.
_ALLOW_ALL = {"rule_no": 100, "action": "allow", "protocol": "-1", "cidr_block": ANYWHERE,
              "from_port": 0, "to_port": 0}


@dataclass(frozen=True)
class NetworkConfig:
    """Inputs of :class:`Network`.

    name: prefix of every Name tag and named resource.
    flow_log_retention_days: how long VPC flow logs are kept in CloudWatch Logs.
    nat_private_ip: the NAT gateway's fixed address in the public subnet, outside the range
        kept for the load balancers' fixed addresses.
    permissions_boundary: the ARN of the policy that caps the flow-log role; None for none.
    """

    name: str
    vpc_cidr: str
    public_subnet_cidr: str
    private_subnet_cidr: str
    availability_zone: str
    flow_log_retention_days: int = 365
    nat_private_ip: Optional[str] = None
    permissions_boundary: Optional[str] = None


class Network(Construct):
    """VPC, subnets, internet and NAT gateways, routes, a closed default group, flow logs."""

    def __init__(self, scope: Construct, id: str, config: NetworkConfig):
        super().__init__(scope, id)
        name = config.name
        vpc = Vpc(self, "vpc", cidr_block=config.vpc_cidr, enable_dns_support=True,
                  enable_dns_hostnames=True, tags={"Name": f"{name}-vpc"})
        # Hosts get public addresses only on purpose (the LBs), never by default.
        public = Subnet(self, "public", vpc_id=vpc.id, cidr_block=config.public_subnet_cidr,
                        availability_zone=config.availability_zone,
                        map_public_ip_on_launch=False, tags={"Name": f"{name}-public"})
        private = Subnet(self, "private", vpc_id=vpc.id, cidr_block=config.private_subnet_cidr,
                         availability_zone=config.availability_zone,
                         map_public_ip_on_launch=False, tags={"Name": f"{name}-private"})

        gateway = InternetGateway(self, "internet-gateway", vpc_id=vpc.id,
                                  tags={"Name": f"{name}-igw"})
        public_routes = RouteTable(self, "public-routes", vpc_id=vpc.id,
                                   tags={"Name": f"{name}-public"})
        route_in = Route(self, "public-default-route", route_table_id=public_routes.id,
                         destination_cidr_block=ANYWHERE, gateway_id=gateway.id)
        public_association = RouteTableAssociation(self, "public-routes-association",
                                                   subnet_id=public.id,
                                                   route_table_id=public_routes.id)

        private_routes = RouteTable(self, "private-routes", vpc_id=vpc.id,
                                    tags={"Name": f"{name}-private"})
        RouteTableAssociation(self, "private-routes-association", subnet_id=private.id,
                              route_table_id=private_routes.id)
        # The private hosts' only way out (packages, images, SSM): the project creates no VPC
        # endpoints, so the settings refuse to go without it.
        nat_address = Eip(self, "nat-address", domain="vpc",
                          tags={"Name": f"{name}-nat"}, depends_on=[gateway])
        nat = NatGateway(self, "nat-gateway", allocation_id=nat_address.id,
                         subnet_id=public.id, private_ip=config.nat_private_ip,
                         tags={"Name": f"{name}-nat"})
        route_out = Route(self, "private-default-route", route_table_id=private_routes.id,
                          destination_cidr_block=ANYWHERE, nat_gateway_id=nat.id)
        # A private host's first boot installs packages and pulls images: it must not start
        # before its way out exists.
        self.private_egress = [route_out]
        # The same for a public host (an LB), whose way out is the internet gateway.
        self.public_egress = [route_in, public_association]

        # Declaring the default group with no rules empties it: nothing can use it by mistake.
        DefaultSecurityGroup(self, "default-security-group", vpc_id=vpc.id, ingress=[],
                             egress=[], tags={"Name": f"{name}-default-closed"})
        # AWS makes the default network ACL and the main route table without tags, and the
        # other environment's deploy role is kept out by the Environment tag: adopted here,
        # with AWS's own content (every subnet uses that ACL), they carry it. An untagged ACL
        # would take a deny-all entry from any role that may write ACLs.
        DefaultNetworkAcl(self, "default-network-acl",
                          default_network_acl_id=vpc.default_network_acl_id,
                          ingress=[DefaultNetworkAclIngress(**_ALLOW_ALL)],
                          egress=[DefaultNetworkAclEgress(**_ALLOW_ALL)],
                          tags={"Name": f"{name}-default"},
                          lifecycle={"ignore_changes": ["subnet_ids"]})
        DefaultRouteTable(self, "main-route-table",
                          default_route_table_id=vpc.default_route_table_id, route=[],
                          tags={"Name": f"{name}-main-unused"})
        self._flow_logs(name, vpc.id, config.flow_log_retention_days,
                        config.permissions_boundary)

        # An Elastic IP is associated with an instance only once the VPC has an internet
        # gateway: what depends on a public address waits for it.
        self.internet_gateway = gateway
        self.vpc_id = vpc.id
        self.public_subnet_id = public.id
        self.private_subnet_id = private.id

    def _flow_logs(self, name: str, vpc_id: str, retention_days: int,
                   permissions_boundary: Optional[str]) -> None:
        log_group = CloudwatchLogGroup(self, "flow-log-group",
                                       name=f"/vpc/{name}/flow-logs",
                                       retention_in_days=retention_days)
        trust = DataAwsIamPolicyDocument(self, "flow-log-trust", statement=[{
            "actions": ["sts:AssumeRole"],
            "principals": [{"type": "Service", "identifiers": ["vpc-flow-logs.amazonaws.com"]}],
        }])
        role = IamRole(self, "flow-log-role", name=f"{name}-flow-logs",
                       assume_role_policy=trust.json, permissions_boundary=permissions_boundary)
        write_logs = DataAwsIamPolicyDocument(self, "flow-log-permissions", statement=[{
            "actions": ["logs:CreateLogStream", "logs:PutLogEvents",
                        "logs:DescribeLogStreams"],
            "resources": [f"{log_group.arn}:*"],
        }])
        IamRolePolicy(self, "flow-log-policy", role=role.id, name="write-flow-logs",
                      policy=write_logs.json)
        FlowLog(self, "flow-log", vpc_id=vpc_id, traffic_type="ALL",
                log_destination=log_group.arn, iam_role_arn=role.arn,
                tags={"Name": f"{name}-flow-logs"})
