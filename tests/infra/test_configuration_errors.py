"""Every kind of configuration mistake: one clear line, exit status 2, output untouched.

The corpus runs ``main.main`` in-process: validation happens before the CDK is loaded (a
subprocess test below proves it), so each case costs milliseconds.
"""
import gzip
import json
import os
import stat
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Callable

import moto
import pytest
import yaml
from pydantic import BaseModel

import main
from core.settings import (MAX_TAGS_PER_RESOURCE, MAX_USER_TAGS, STACK_TAG_KEYS, Settings,
                           load_environment, scan_config_dir, shown)

REPO = Path(__file__).resolve().parents[2]
VALID_TEXT = (REPO / "config" / "staging.yaml").read_text()
VALID = yaml.safe_load(VALID_TEXT)
LONGEST_LINE = 450


def with_changes(changes: dict) -> dict:
    document = yaml.safe_load(yaml.safe_dump(VALID))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = document
        for part in parents:
            target = target.setdefault(part, {})
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return document


DELETE = object()


# Each builder fills the config folder and returns extra command-line arguments.
def change(changes: dict) -> Callable[[Path], list]:
    def build(config_dir: Path) -> list:
        (config_dir / "staging.yaml").write_text(yaml.safe_dump(with_changes(changes)))
        return []
    return build


def text(edit: Callable[[str], str | bytes]) -> Callable[[Path], list]:
    def build(config_dir: Path) -> list:
        content = edit(VALID_TEXT)
        (config_dir / "staging.yaml").write_bytes(
            content.encode() if isinstance(content, str) else content)
        return []
    return build


def folder(setup: Callable[[Path], list | None]) -> Callable[[Path], list]:
    def build(config_dir: Path) -> list:
        return setup(config_dir) or []
    return build


def valid_staging(config_dir: Path) -> None:
    (config_dir / "staging.yaml").write_text(VALID_TEXT)


def _symlink_loop(config_dir: Path) -> None:
    valid_staging(config_dir)
    (config_dir / "qa.yaml").symlink_to("qa-other.yaml")
    (config_dir / "qa-other.yaml").symlink_to("qa.yaml")


def _yml_file(config_dir: Path) -> None:
    (config_dir / "production.yaml").write_text(VALID_TEXT.replace("staging", "production"))
    (config_dir / "staging.yml").write_text(VALID_TEXT)


def _shared_and_single(config_dir: Path) -> None:
    valid_staging(config_dir)
    (config_dir / "qa.yaml").write_text(yaml.safe_dump(with_changes(
        {"state_bucket": "another-bucket", "app.host_count": 0})))


def _nested_names(config_dir: Path) -> None:
    valid_staging(config_dir)
    (config_dir / "staging-eu.yaml").write_text(yaml.safe_dump(with_changes(
        {"environment": "staging-eu"})))


def _long(value: str) -> str:
    return value * 40


VALID_LINES = len(VALID_TEXT.splitlines())
RETENTIONS = "backups:\n  retention_days: 3\nlogs:\n  retention_days: 7\n"
MERGE_MISTAKE = ("logs: &retention\n  retention_days: 7\n"
                 "backups:\n  <<: *retention\n  retention_dys: 3\n")

CORPUS = [
    # Instance types, regions and zones: botocore's data.
    pytest.param(change({"instance_types.lb": "t3.mirco"}), [
        "instance_types.lb: 't3.mirco' is not an EC2 instance type: did you mean 't3.micro'?"],
        id="instance-type-typo"),
    pytest.param(change({"instance_types.app": "t3.mega"}), [
        "instance_types.app: 't3.mega' is not an EC2 instance type"], id="instance-type-size"),
    pytest.param(change({"instance_types.db": "T3.small"}), [
        "instance_types.db: 'T3.small' is not an EC2 instance type: did you mean 't3.small'?"],
        id="instance-type-case"),
    pytest.param(change({"instance_types.log": "t3.medium "}), [
        "instance_types.log: 't3.medium ' is not an EC2 instance type"],
        id="instance-type-space"),
    pytest.param(change({"instance_types.app": "t4g.micro"}), [
        "instance_types.app: 't4g.micro' is an arm64 (Graviton) type, and the app image is "
        "built for amd64 only: choose an x86_64 type such as t3.micro"], id="app-graviton"),
    pytest.param(change({"instance_types.nfs": "mac2.metal"}), [
        "instance_types.nfs: 'mac2.metal' is a macOS instance"], id="instance-type-mac"),
    pytest.param(change({"instance_types.app": 5}), [
        "instance_types.app: Input should be a valid string (got 5; YAML reads it as a "
        "number: quote it)"], id="instance-type-int"),
    pytest.param(change({"instance_types.gpu": "g5.xlarge"}), [
        "instance_types.gpu: unknown key. Allowed keys here: lb, app, db, nfs, log"],
        id="instance-type-unknown-role"),
    pytest.param(change({"region": "eu-wset-1"}), [
        "region: 'eu-wset-1' is not an AWS region: did you mean 'eu-west-1'?"],
        id="region-typo"),
    pytest.param(change({"region": "eu-west-9", "availability_zone": "eu-west-9a"}), [
        "region: 'eu-west-9' is not an AWS region"], id="region-unknown"),
    pytest.param(change({"region": "cn-north-1", "availability_zone": "cn-north-1a"}), [
        "region: 'cn-north-1' is in the aws-cn partition; only the aws partition is supported: "
        "choose a commercial region such as eu-west-1"], id="region-china"),
    pytest.param(change({"region": "us-gov-west-1", "availability_zone": "us-gov-west-1a"}), [
        "region: 'us-gov-west-1' is in the aws-us-gov partition; only the aws partition is "
        "supported"], id="region-govcloud"),
    pytest.param(change({"region": "EU-WEST-1"}), [
        "region: 'EU-WEST-1' is not an AWS region: did you mean 'eu-west-1'?"],
        id="region-case"),
    pytest.param(change({"region": "eu-west-1a"}), [
        "region: 'eu-west-1a' is not an AWS region: did you mean 'eu-west-1'?"],
        id="region-given-a-zone"),
    pytest.param(change({"availability_zone": "eu-west-1z"}), [
        "availability_zone: 'eu-west-1z' is not an availability zone: the region followed by "
        "a letter a to f"], id="zone-letter"),
    pytest.param(change({"availability_zone": "us-east-1a"}), [
        "availability_zone: 'us-east-1a' is not a zone of region eu-west-1; use e.g. "
        "eu-west-1a"], id="zone-outside-region"),
    pytest.param(change({"availability_zone": "b"}), [
        "availability_zone: 'b' is not an availability zone"], id="zone-letter-only"),
    pytest.param(change({"availability_zone": DELETE}), [
        "availability_zone: required but missing (a zone of the region such as eu-west-1a)"],
        id="zone-missing"),
    # Tags: AWS's rules, counting the stacks' own tags.
    pytest.param(change({"tags": {"aws:cost": "x"}}), [
        "tags: tag key 'aws:cost': the prefix aws: is reserved for AWS"], id="tag-aws-prefix"),
    pytest.param(change({"tags": {"AWS:Cost": "x"}}), [
        "tags: tag key 'AWS:Cost': the prefix aws: is reserved"], id="tag-aws-prefix-case"),
    pytest.param(change({"tags": {f"Key{n}": "v" for n in range(MAX_USER_TAGS + 1)}}), [
        f"tags: {MAX_USER_TAGS + 1} tags; at most {MAX_USER_TAGS}: AWS allows 50 per "
        "resource and the stacks set 6"], id="tag-count"),
    pytest.param(change({"tags": {"Name": "mine"}}), [
        "tags: tag key 'Name' is set by the stacks themselves"], id="tag-stack-key"),
    pytest.param(change({"tags": {"environment": "qa"}}), [
        "tags: tag key 'environment' is set by the stacks themselves"],
        id="tag-stack-key-case"),
    pytest.param(change({"tags": {"Owner": "a;b"}}), [
        "tags.Owner: tag value 'a;b' is not 0 to 256 letters"], id="tag-value-character"),
    pytest.param(change({"tags": {"k" * 129: "v"}}), [
        "tags: tag key 'kkkkkkkkkk"], id="tag-key-long"),
    pytest.param(change({"tags": {"Team": "x" * 300}}), [
        "tags.Team: tag value 'xxxxxxxx"], id="tag-value-long"),
    pytest.param(change({"tags": {"Team": 5}}), [
        "tags.Team: Input should be a valid string (got 5; YAML reads it as a number: quote "
        "it)"], id="tag-value-int"),
    pytest.param(change({"tags": ["CostCenter"]}), [
        "tags: Input should be a valid dictionary"], id="tag-list"),
    # The state bucket: S3's naming rules, the length rule always stated.
    pytest.param(change({"state_bucket": "192.168.1.10"}), [
        "state_bucket: '192.168.1.10' is shaped like an IP address; S3 bucket names are 3 to "
        "63 characters"], id="bucket-ip"),
    pytest.param(change({"state_bucket": "my..bucket"}), [
        "state_bucket: 'my..bucket' holds two adjacent dots; S3 bucket names are 3 to 63"],
        id="bucket-dots"),
    pytest.param(change({"state_bucket": "ab"}), [
        "state_bucket: 'ab' is 2 characters long; S3 bucket names are 3 to 63 characters"],
        id="bucket-short"),
    pytest.param(change({"state_bucket": "b" * 64}), [
        "is 64 characters long; S3 bucket names are 3 to 63 characters"], id="bucket-long"),
    pytest.param(change({"state_bucket": "My-Bucket"}), [
        "state_bucket: 'My-Bucket' holds a character other than a-z, 0-9, . or -; S3 bucket "
        "names are 3 to 63"], id="bucket-upper"),
    pytest.param(change({"state_bucket": "bucket_state"}), [
        "state_bucket: 'bucket_state' holds a character other than"], id="bucket-underscore"),
    pytest.param(change({"state_bucket": "-bucket"}), [
        "state_bucket: '-bucket' does not start and end with a letter or digit"],
        id="bucket-hyphen-first"),
    pytest.param(change({"state_bucket": "xn--bucket"}), [
        "state_bucket: 'xn--bucket' starts with a prefix AWS reserves"], id="bucket-xn"),
    pytest.param(change({"state_bucket": "state-s3alias"}), [
        "state_bucket: 'state-s3alias' ends with a suffix AWS reserves"],
        id="bucket-s3alias"),
    # Networks.
    pytest.param(change({"network.vpc_cidr": "10.0.0.0/8"}), [
        "network.vpc_cidr: 10.0.0.0/8 is a /8; AWS allows VPC blocks of /16 to /28"],
        id="vpc-too-large"),
    pytest.param(change({"network.vpc_cidr": "10.0.0.0/29"}), [
        "network.vpc_cidr: 10.0.0.0/29 is a /29; AWS allows VPC blocks of /16 to /28"],
        id="vpc-too-small"),
    pytest.param(change({"network.vpc_cidr": "10.0.0.0/33"}), [
        "network.vpc_cidr: '10.0.0.0/33' is not a network in CIDR form"],
        id="vpc-malformed"),
    pytest.param(change({"network.vpc_cidr": "10.0.0.1/16"}), [
        "network.vpc_cidr: '10.0.0.1/16' has host bits set; the network is 10.0.0.0/16"],
        id="vpc-host-bits"),
    pytest.param(change({"network.vpc_cidr": "fd00::/56"}), [
        "network.vpc_cidr: 'fd00::/56' is not an IPv4 network"], id="vpc-ipv6"),
    pytest.param(change({"network.vpc_cidr": "169.254.0.0/16"}), [
        "network.vpc_cidr: 169.254.0.0/16 is a loopback, link-local, multicast or reserved "
        "range, which AWS refuses"], id="vpc-link-local"),
    pytest.param(change({"network.private_subnet_cidr": "10.0.2.0/28"}), [
        "network.private_subnet_cidr: 10.0.2.0/28 is a /28; use /16 to /26"],
        id="subnet-too-small"),
    pytest.param(change({"network.private_subnet_cidr": "10.9.2.0/24"}), [
        "network.private_subnet_cidr: 10.9.2.0/24 lies outside network.vpc_cidr 10.0.0.0/16"],
        id="subnet-outside-vpc"),
    pytest.param(change({"network.private_subnet_cidr": "10.0.1.0/25"}), [
        "network.private_subnet_cidr: 10.0.1.0/25 overlaps network.public_subnet_cidr "
        "10.0.1.0/24"], id="subnets-overlap"),
    pytest.param(change({"network.private_subnet_cidr": "10.0.2.0/26",
                         "app.host_count": 50}), [
        "app.host_count: 50 APP hosts do not fit in 10.0.2.0/26"], id="hosts-do-not-fit"),
    pytest.param(change({"network.nat_gateway": False}), [
        "network.nat_gateway: false would leave the private hosts with no way out"],
        id="nat-off"),
    pytest.param(change({"network.nat_gateway": "yes"}), [
        "network.nat_gateway: Input should be a valid boolean (got 'yes'; write true or "
        "false)"], id="nat-string"),
    pytest.param(change({"network.nat_gatway": False}), [
        "network.nat_gatway: unknown key: did you mean 'nat_gateway'? Allowed keys here: "
        "vpc_cidr"],
        id="nat-misspelt"),
    pytest.param(change({"network.flow_log_retention_days": 10}), [
        "network.flow_log_retention_days: 10 is not a CloudWatch Logs retention period; AWS "
        "allows 1, 3, 5, 7, 14, 30"], id="retention-not-allowed"),
    pytest.param(change({"network.flow_log_retention_days": 0}), [
        "network.flow_log_retention_days: 0 is not a CloudWatch Logs retention period"],
        id="retention-zero"),
    pytest.param(change({"network.flow_log_retention_days": 365.0}), [
        "network.flow_log_retention_days: Input should be a valid integer (got 365.0)"],
        id="retention-float"),
    # The administrators' network.
    pytest.param(change({"admin_cidr": "203.0.113.5"}), [
        "admin_cidr: '203.0.113.5' is a single address; write 203.0.113.5/32"],
        id="admin-bare-address"),
    pytest.param(change({"admin_cidr": "0.0.0.0/0"}), [
        "admin_cidr: 0.0.0.0/0 would open Kibana to the whole internet"], id="admin-open"),
    pytest.param(change({"admin_cidr": "the office"}), [
        "admin_cidr: 'the office' is not a network in CIDR form"], id="admin-words"),
    pytest.param(change({"admin_cidr": "192.0.2.7/24"}), [
        "admin_cidr: '192.0.2.7/24' has host bits set; the network is 192.0.2.0/24"],
        id="admin-host-bits"),
    # The GitHub repository of the OIDC subject.
    pytest.param(change({"github_repository": "example-org/web-platform.git"}), [
        "github_repository: 'example-org/web-platform.git': write owner/name only, "
        "'example-org/web-platform'"], id="repo-dot-git"),
    pytest.param(change({"github_repository": "https://github.com/example-org/web-platform"}), [
        "github_repository: 'https://github.com/example-org/web-platform': write owner/name "
        "only, 'example-org/web-platform'"], id="repo-url"),
    pytest.param(change({"github_repository": "git@github.com:example-org/web-platform.git"}),
                 ["github_repository: 'git@github.com:example-org/web-platform.git': write "
                  "owner/name only"], id="repo-ssh-url"),
    pytest.param(change({"github_repository": "web-platform"}), [
        "github_repository: 'web-platform' is not owner/name"], id="repo-no-owner"),
    pytest.param(change({"github_repository": "-org/web"}), [
        "github_repository: '-org/web' is not owner/name"], id="repo-bad-owner"),
    # Container images: the distribution spec's reference grammar.
    pytest.param(change({"app.image": "https://ghcr.io/org/app:1.0"}), [
        "app.image: 'https://ghcr.io/org/app:1.0' is not an image reference with a tag or "
        "digest, e.g. ghcr.io/org/app:1.4.2; drop the scheme 'https://'"], id="image-scheme"),
    pytest.param(change({"app.image": "ghcr.io/Org/App:1.0"}), [
        "app.image: 'ghcr.io/Org/App:1.0' is not an image reference with a tag or digest, "
        "e.g. ghcr.io/org/app:1.4.2; repository names are lower case"], id="image-upper"),
    pytest.param(change({"app.image": "ghcr.io/org/app"}), [
        "app.image: 'ghcr.io/org/app' is not an image reference with a tag or digest, e.g. "
        "ghcr.io/org/app:1.4.2; add a tag"], id="image-no-tag"),
    pytest.param(change({"app.image": "my app:1"}), [
        "app.image: 'my app:1' is not an image reference"], id="image-space"),
    pytest.param(change({"app.image": "ghcr.io/org/app@sha256:abc123"}), [
        "app.image: 'ghcr.io/org/app@sha256:abc123' is not an image reference"],
        id="image-short-digest"),
    pytest.param(change({"app.image": "ghcr.io/org/app:"}), [
        "app.image: 'ghcr.io/org/app:' is not an image reference"], id="image-empty-tag"),
    pytest.param(change({"app.image": "ghcr.io/org/app:" + "t" * 200}), [
        "app.image: 'ghcr.io/org/app:tttt"], id="image-long-tag"),
    pytest.param(change({"app.image": "ghcr.io/org//app:1"}), [
        "app.image: 'ghcr.io/org//app:1' is not an image reference"], id="image-empty-path"),
    # The ACME contact.
    pytest.param(change({"acme_email": "mailto:ops@example.com"}), [
        "acme_email: 'mailto:ops@example.com': write the address alone, without mailto:"],
        id="email-mailto"),
    pytest.param(change({"acme_email": "ops"}), [
        "acme_email: 'ops' is not an e-mail address"], id="email-no-domain"),
    # Keys, types and values.
    pytest.param(change({"colour": "blue"}), [
        "staging.yaml: colour: unknown key. Allowed keys here: environment, project, region"],
        id="unknown-key"),
    pytest.param(change({"backups.retention_day": 3}), [
        "backups.retention_day: unknown key: did you mean 'retention_days'?"],
        id="misspelt-key"),
    pytest.param(change({"app.host_count": "3"}), [
        "app.host_count: Input should be a valid integer (got '3'; write it without quotes)"],
        id="count-quoted"),
    pytest.param(change({"app.host_count": 0}), [
        "app.host_count: Input should be greater than or equal to 1 (got 0)"],
        id="count-zero"),
    pytest.param(change({"app.host_count": 51}), [
        "app.host_count: Input should be less than or equal to 50 (got 51)"],
        id="count-too-many"),
    pytest.param(change({"app": None}), [
        "app: expected a mapping of settings (got None)"], id="section-null"),
    pytest.param(change({"load_balancer.count": 3}), [
        "load_balancer.count: 3 load balancers; write 1 (LB-01 holds the Elastic IP, a single "
        "point of failure) or 2 (LB-01 and LB-02 behind a Network Load Balancer)"],
        id="lb-count-three"),
    pytest.param(change({"load_balancer.count": 0}), [
        "load_balancer.count: 0 load balancers; write 1"], id="lb-count-zero"),
    pytest.param(change({"load_balancer.count": "2"}), [
        "load_balancer.count: Input should be a valid integer (got '2'; write it without "
        "quotes)"], id="lb-count-quoted"),
    pytest.param(change({"load_balancer.count": True}), [
        "load_balancer.count: Input should be a valid integer (got True"], id="lb-count-bool"),
    pytest.param(change({"load_balancer.size": 2}), [
        "load_balancer.size: unknown key. Allowed keys here: count"], id="lb-unknown-key"),
    pytest.param(change({"load_balancer": 2}), [
        "load_balancer: expected a mapping of settings (got 2)"], id="lb-section-number"),
    pytest.param(change({"app.image": 1.5}), [
        "app.image: Input should be a valid string (got 1.5; YAML reads it as a number: "
        "quote it)"], id="image-number"),
    pytest.param(change({"protect_data": "false"}), [
        "protect_data: Input should be a valid boolean (got 'false'; write it without "
        "quotes)"], id="bool-quoted"),
    pytest.param(change({"environment": "production"}), [
        "staging.yaml: environment: 'production' does not match the file name"],
        id="environment-mismatch"),
    pytest.param(change({"domain": "App.Example.com"}), [
        "domain: expected a lower-case DNS name"], id="domain-upper"),
    pytest.param(change({"alerts.email": "mailto:ops@example.com"}), [
        "alerts.email: 'mailto:ops@example.com': write the address alone, without mailto:"],
        id="alert-email-mailto"),
    pytest.param(change({"alerts.email": "ops at example.com"}), [
        "alerts.email: 'ops at example.com' is not an e-mail address such as ops@example.com"],
        id="alert-email-not-an-address"),
    pytest.param(change({"alerts": DELETE}), ["alerts: required"], id="alerts-missing"),
    pytest.param(change({"backups.full_backup_day": "Sunday"}), [
        "backups.full_backup_day: expected Mon, Tue, Wed, Thu, Fri, Sat or Sun (got 'Sunday')"],
        id="full-backup-day-spelled-out"),
    pytest.param(change({"backups.time": "25:00"}), [
        "backups.time: expected HH:MM, 24-hour clock, UTC, in quotes (got '25:00')"],
        id="time-out-of-range"),
    pytest.param(change({"region": "r" * 500}), [
        "region: 'rrrrrrrrrr"], id="long-value"),
    pytest.param(text(lambda t: t + "k" * 300 + ": 1\n"), [
        f"staging.yaml: {shown('k' * 300)}: unknown key. Allowed keys here: environment"],
        id="long-unknown-key"),
    pytest.param(text(lambda t: t + '"a\\nb": 1\n'), [
        "staging.yaml: 'a\\nb': unknown key"], id="key-with-newline"),
    pytest.param(text(lambda t: t + 'tags: {Team: "a\\nb"}\n'), [
        "tags.Team: tag value 'a\\nb' is not 0 to 256 letters"], id="tag-value-newline"),
    pytest.param(text(lambda t: t + "tags: {Backup: yes}\n"), [
        "tags.Backup: Input should be a valid string (got True; YAML reads it as a boolean: "
        "quote it)"], id="tag-value-yes"),
    pytest.param(text(lambda t: t.replace("retention_days: 3", "retention_days: 3\n  time: "
                                          "2026-01-01")), [
        "backups.time: Input should be a valid string (got datetime.date(2026, 1, 1); YAML "
        "reads it as a date: quote it)"], id="time-as-date"),
    pytest.param(text(lambda t: t.replace("retention_days: 3", "retention_days: 1:30")), [
        'backups.retention_days: 1:30 is read by YAML as the base-60 number 90; quote it'],
        id="number-base-sixty"),
    # Comparisons and single-field checks in the same run.
    pytest.param(change({"availability_zone": "us-east-1a", "app.host_count": 0}), [
        "availability_zone: 'us-east-1a' is not a zone of region eu-west-1",
        "app.host_count: Input should be greater than or equal to 1"],
        id="comparison-and-single-field"),
    pytest.param(change({"network.vpc_cidr": "10.1.0.0/16", "instance_types.lb": "t3.mirco"}),
                 ["network.public_subnet_cidr: 10.0.1.0/24 lies outside network.vpc_cidr",
                  "network.private_subnet_cidr: 10.0.2.0/24 lies outside network.vpc_cidr",
                  "instance_types.lb: 't3.mirco' is not an EC2 instance type"],
                 id="comparisons-and-instance-type"),
    pytest.param(folder(_shared_and_single), [
        "qa.yaml: app.host_count: Input should be greater than or equal to 1",
        "state_bucket: environments disagree (another-bucket, example-org-web-platform-tfstate)"],
        id="shared-and-single-field"),
    pytest.param(folder(_nested_names), [
        "environment: 'staging-eu' starts with 'staging' and a hyphen, so staging's permissions "
        "(every name staging-*) would reach it; rename one"], id="environment-inside-another"),
    # YAML itself.
    pytest.param(text(lambda t: t.replace("retention_days: 3", "retention_days: 3\n  time: 12:30")),
                 ['backups.time: 12:30 is read by YAML as the base-60 number 750; quote it: '
                  '"12:30"'], id="time-base-sixty"),
    pytest.param(text(lambda t: t + "[a, b]: 1\n"), [
        f"staging.yaml: line {VALID_LINES + 1}, column 1: YAML syntax error: a key must be a "
        "plain value, not a list or a mapping"], id="list-as-key"),
    pytest.param(text(lambda t: t + "region: us-east-1\n"), [
        f"staging.yaml: line {VALID_LINES + 1}, column 1: YAML syntax error: duplicate key "
        "'region'"],
        id="duplicate-key"),
    pytest.param(text(lambda t: t + "app:\n  host_count: [2\n"), [
        f"staging.yaml: line {VALID_LINES + 3}, column 1: YAML syntax error"], id="syntax-error"),
    pytest.param(text(lambda t: "- region: eu-west-1\n"), [
        "staging.yaml: expected a mapping of settings at the top level"], id="top-level-list"),
    pytest.param(text(lambda t: ""), [
        "staging.yaml: expected a mapping of settings at the top level"], id="empty-file"),
    pytest.param(text(lambda t: b"\xff\xfe\x00binary"), [
        "staging.yaml: cannot be read as UTF-8 text"], id="binary-file"),
    pytest.param(text(lambda t: t.replace(RETENTIONS, MERGE_MISTAKE)), [
        "backups.retention_dys: unknown key: did you mean 'retention_days'?"],
        id="merge-key-with-a-mistake"),
    # Files of the config folder.
    pytest.param(folder(_yml_file), [
        "staging.yml: environment files end in .yaml; rename it to staging.yaml"],
        id="yml-suffix"),
    pytest.param(folder(lambda d: (d / "staging.YAML").write_text(VALID_TEXT) and None), [
        "staging.YAML: environment files end in .yaml; rename it to staging.yaml"],
        id="upper-case-suffix"),
    pytest.param(folder(lambda d: (d / "bootstrap.yaml").write_text(VALID_TEXT) and None), [
        "bootstrap.yaml: 'bootstrap' is the name of the stack that holds the state bucket"],
        id="bootstrap-file"),
    pytest.param(folder(lambda d: (d / "Prod_EU.yaml").write_text(VALID_TEXT) and None), [
        "Prod_EU.yaml: 'Prod_EU' cannot name an environment: rename the file to 2-21 "
        "lower-case letters"], id="file-name"),
    pytest.param(folder(lambda d: valid_staging(d) or (d / "qa.yaml").symlink_to("gone.yaml")),
                 ["qa.yaml: a symbolic link to gone.yaml, which does not exist"],
                 id="dangling-symlink"),
    pytest.param(folder(_symlink_loop), [
        "qa-other.yaml: a loop of symbolic links", "qa.yaml: a loop of symbolic links"],
        id="symlink-loop"),
    pytest.param(folder(lambda d: valid_staging(d) or (d / "qa.yaml").mkdir()), [
        "qa.yaml: not a regular file"], id="folder-named-yaml"),
    pytest.param(folder(lambda d: ["--config-dir", str(d / "missing")]), [
        "missing: no such folder; name the folder of <environment>.yaml files"],
        id="config-dir-missing"),
    pytest.param(folder(lambda d: valid_staging(d) or ["--config-dir", str(d / "staging.yaml")]),
                 ["staging.yaml: is a file, not a folder"], id="config-dir-is-a-file"),
    pytest.param(folder(lambda d: None), ["no <environment>.yaml files"], id="no-environments"),
    pytest.param(folder(lambda d: valid_staging(d) or ["--environment", "prod"]), [
        "unknown environment 'prod'; known environments: staging"], id="unknown-environment"),
    pytest.param(folder(lambda d: valid_staging(d) or ["--environment", "bootstrap"]), [
        "bootstrap.yaml: 'bootstrap' is the name of the stack"], id="environment-bootstrap"),
]


@pytest.fixture
def previous_output(tmp_path) -> Path:
    """An earlier synthesis, with what `terraform init/apply` left in it, that a failed run
    must leave exactly as it was."""
    outdir = tmp_path / "cdktf.out"
    for stack in ("bootstrap", "staging"):
        folder = outdir / "stacks" / stack
        plugin = (folder / ".terraform" / "providers" / "registry.terraform.io" / "hashicorp"
                  / "aws" / "6.25.0" / "linux_amd64" / "terraform-provider-aws_v6.25.0_x5")
        plugin.parent.mkdir(parents=True)
        plugin.write_bytes(b"\x7fELF provider")
        plugin.chmod(0o755)
        (folder / "cdk.tf.json").write_text('{"earlier": true}')
        (folder / ".terraform.lock.hcl").write_text("# lock\n")
    (outdir / "stacks" / "bootstrap" / "terraform.tfstate").write_text('{"serial": 7}')
    (outdir / "stacks" / "staging" / ".terraform" / "terraform.tfstate").write_text(
        '{"backend": {"type": "s3"}}')
    (outdir / "manifest.json").write_text("{}")
    return outdir


def snapshot(directory: Path) -> dict:
    """Every entry under ``directory``: kind, mode and content (or link target)."""
    state = {}
    for path in sorted([directory, *directory.rglob("*")]):
        info = path.lstat()
        content = (os.readlink(path) if path.is_symlink()
                   else path.read_bytes() if path.is_file() else None)
        state[str(path.relative_to(directory))] = (stat.S_IFMT(info.st_mode),
                                                   stat.S_IMODE(info.st_mode), content)
    return state


@pytest.mark.parametrize("build, expected", CORPUS)
def test_mistake_is_reported_in_one_line_each_and_nothing_is_written(
        tmp_path, previous_output, capsys, build, expected):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    extra = build(config_dir)
    before = snapshot(previous_output)

    status = main.main(["--config-dir", str(config_dir), "--outdir", str(previous_output),
                        *extra])

    out, err = capsys.readouterr()
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == len(expected), err
    for fragment in expected:
        assert sum(fragment in line for line in lines) == 1, (fragment, err)
    assert all(line.startswith("error: ") and len(line) <= LONGEST_LINE for line in lines), err
    assert "Traceback" not in err and out == ""
    assert snapshot(previous_output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdktf.out", "config"]


def test_corpus_covers_at_least_sixty_mistakes():
    assert len(CORPUS) >= 60


def test_error_path_never_loads_the_cdk_and_is_fast(tmp_path, previous_output):
    """The real command, as a user runs it: the CDK, the provider and botocore stay unloaded.

    The time is printed (run with -s); the bound is loose because the machine is shared.
    """
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    change({"instance_types.lb": "t3.mirco", "region": "eu-wset-1"})(config_dir)
    probe = ("import sys, time; start = time.perf_counter(); import main; "
             "status = main.main(sys.argv[1:]); elapsed = time.perf_counter() - start; "
             "heavy = sorted(({m.split('.')[0] for m in sys.modules} | set(sys.modules)) & "
             "{'cdktf', 'cdktn', 'jsii', 'constructs', 'stacks', 'modules', 'botocore', "
             "'boto3', 'core.cdk'}); print(status, elapsed, heavy, file=sys.stdout)")
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", probe, "--config-dir", str(config_dir), "--outdir",
         str(previous_output)], cwd=REPO, capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - started
    status, in_process, heavy = result.stdout.split(" ", 2)
    assert status == "2" and heavy.strip() == "[]", result
    assert len(result.stderr.strip().splitlines()) == 2 and "Traceback" not in result.stderr
    print(f"\nmistake reported in {wall:.3f} s wall ({float(in_process):.3f} s in main)")
    assert wall < 5


def test_subprocess_reports_like_in_process(tmp_path, previous_output):
    """One run of ``python main.py`` itself: the exit status and stderr reach the shell."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "staging.yml").write_text(VALID_TEXT)
    before = snapshot(previous_output)
    result = subprocess.run(
        [sys.executable, "main.py", "--config-dir", str(config_dir), "--outdir",
         str(previous_output)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"error: {config_dir / 'staging.yml'}: environment files end in "
                             ".yaml; rename it to staging.yaml, or move it out of the folder\n")
    assert snapshot(previous_output) == before


def test_unwritable_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setitem(sys.modules, "stacks", _fake_stacks())
    assert main.main(["--environment", "staging", "--outdir", str(blocker / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: --outdir {blocker / 'out'}: cannot write the output")
    assert len(error.strip().splitlines()) == 1


def _fake_stacks() -> types.ModuleType:
    module = types.ModuleType("stacks")
    module.build_app = _FakeApp
    return module


class _FakeApp:
    """Stands in for the CDK app where only main.py's handling of the output is tested."""

    def __init__(self, environments, outdir):
        self.outdir = Path(outdir)

    def synth(self):
        (self.outdir / "stacks" / "staging").mkdir(parents=True)
        (self.outdir / "stacks" / "staging" / "cdk.tf.json").write_text("{}")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_output_folder_follows_the_umask(tmp_path, monkeypatch, umask):
    """mkdtemp makes 0700 folders; cdktf.out/ gets what any folder would."""
    monkeypatch.setitem(sys.modules, "stacks", _fake_stacks())
    previous = os.umask(umask)
    try:
        main.synthesize(main.load_environments(["staging"]), tmp_path / "cdktf.out")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "cdktf.out").stat().st_mode) == 0o777 & ~umask
    assert (tmp_path / "cdktf.out" / "stacks" / "staging" / "cdk.tf.json").is_file()


def test_synthesized_output_is_not_private(cdktf_out):
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(cdktf_out.stat().st_mode) == 0o777 & ~mask


def write_staging(config_dir: Path, changes: dict) -> None:
    config_dir.mkdir(exist_ok=True)
    (config_dir / "staging.yaml").write_text(yaml.safe_dump(with_changes(changes)))


@pytest.mark.parametrize("changes", [
    {"instance_types.lb": "t4g.micro", "instance_types.db": "m7g.large"},
    {"region": "mx-central-1", "availability_zone": "mx-central-1a"},
    {"region": "us-east-1", "availability_zone": "us-east-1f"},
    {"region": "ca-west-1", "availability_zone": "ca-west-1b"},
    {"app.image": "localhost:5000/team/app_v2:1.0-rc.1"},
    {"app.image": "ghcr.io/org/app@sha256:" + "a" * 64},
    {"app.image": "registry.example.com:8443/a/b/c:latest@sha256:" + "0" * 64},
    {"app.image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/webapp:3f2c1d0"},
    {"state_bucket": "my.state-bucket.2026"},
    {"tags": {f"Key{n}": "v" for n in range(MAX_USER_TAGS)}},
    {"tags": {"Équipe": "Données clients", "cost-center": "a/b=c+d@e:f_g.h"}},
    {"github_repository": "Example-Org1/web.platform_x"},
    {"admin_cidr": "203.0.113.5/32", "acme_email": "ops+acme@example.com"},
    {"network.flow_log_retention_days": 3653, "backups.time": "23:59"},
    {"network.vpc_cidr": "10.0.0.0/25", "network.public_subnet_cidr": "10.0.0.0/26",
     "network.private_subnet_cidr": "10.0.0.64/26", "app.host_count": 43},
])
def test_what_aws_accepts_is_accepted(tmp_path, changes):
    write_staging(tmp_path, changes)
    settings = load_environment("staging", tmp_path)
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition(".")
        assert getattr(getattr(settings, section) if section else settings, key) == value


def test_merge_key_is_read_as_yaml_defines_it(tmp_path):
    text = VALID_TEXT.replace(RETENTIONS, "logs: &retention\n  retention_days: 7\n"
                                          "backups:\n  <<: *retention\n  time: '04:30'\n")
    (tmp_path / "staging.yaml").write_text(text)
    settings = load_environment("staging", tmp_path)
    assert settings.backups.retention_days == 7 and settings.backups.time == "04:30"


def test_editor_files_and_other_files_are_ignored(tmp_path):
    for name in ("staging.yaml", ".#staging.yaml", "staging.yaml~", ".staging.yaml.swp",
                 "#staging.yaml#", "README.md", "staging.yaml.orig", ".hidden.yml"):
        (tmp_path / name).write_text(VALID_TEXT)
    assert scan_config_dir(tmp_path) == (["staging"], [])


def test_every_zone_aws_lists_is_accepted(tmp_path):
    """moto's copy of DescribeInstanceTypeOfferings names every zone of 30 regions."""
    offerings = Path(moto.__file__).parent / "ec2" / "resources" / "instance_type_offerings"
    zones = set()
    for data in (offerings / "availability-zone").glob("*.json.gz"):
        zones |= {offer["Location"] for offer in json.loads(gzip.decompress(data.read_bytes()))}
    assert len(zones) > 80
    for zone in sorted(zones):
        write_staging(tmp_path, {"region": zone[:-1], "availability_zone": zone})
        assert load_environment("staging", tmp_path).availability_zone == zone


def test_stacks_set_no_tag_key_beyond_the_counted_ones(stack_json):
    """The 50-tag budget counts STACK_TAG_KEYS: no resource may carry another stack tag."""
    for environment in ("production", "staging"):
        stack = stack_json(environment)
        user = set(load_environment(environment).tags)
        (provider,) = stack["provider"]["aws"]
        defaults = set(provider["default_tags"][0]["tags"])
        most = 0
        for kind in stack["resource"].values():
            for resource in kind.values():
                keys = defaults | set(resource.get("tags") or {})
                assert keys - user <= set(STACK_TAG_KEYS), keys - user - set(STACK_TAG_KEYS)
                most = max(most, len(keys - user))
        assert most == len(STACK_TAG_KEYS)
        assert most + len(user) <= MAX_TAGS_PER_RESOURCE


def test_readme_configuration_reference_names_every_key():
    readme = (REPO / "README.md").read_text()
    reference = readme[readme.index("## Configuration reference"):]
    reference = reference[:reference.index("\n## ", 1)]

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            if name == "environment":
                continue
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                yield from keys(field.annotation, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    missing = [key for key in keys(Settings) if f"`{key}`" not in reference
               and not (key.startswith("instance_types.") and "`instance_types." in reference)]
    assert missing == []
