#!/usr/bin/env python3
"""registry-login: log Docker in to Amazon ECR with the host's instance role, before a pull.

    registry-login IMAGE

When IMAGE lives in an ECR registry (ACCOUNT.dkr.ecr.REGION.amazonaws.com/...), asks ECR for
a login token with the instance role and hands it to ``docker login --password-stdin``: the
password never appears on a command line, and nothing long-lived is stored (the token
expires after 12 hours; the next pull logs in again). Any other registry: nothing to do, the
image must be pullable without credentials. Installed on the APP hosts as
/usr/local/sbin/registry-login; needs Ubuntu's python3-boto3. app-deploy runs it before
every pull.
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import subprocess
import sys

# ECR's private registry host names, in every partition (amazonaws.com, amazonaws.com.cn).
ECR_REGISTRY = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


def registry_of(image: str) -> str:
    """The registry host of an image reference ('' for Docker Hub's short names)."""
    first = image.split("/", 1)[0]
    return first if "/" in image and ("." in first or ":" in first) else ""


def ecr_login(image: str, client=None, docker: str = "docker") -> str:
    """Log Docker in to IMAGE's ECR registry; returns the registry, or '' if not ECR."""
    registry = registry_of(image)
    match = ECR_REGISTRY.match(registry)
    if not match:
        return ""
    if client is None:
        import boto3  # imported here so that --help and non-ECR images work without it

        client = boto3.client("ecr", region_name=match["region"])
    answer = client.get_authorization_token(registryIds=[match["account"]])
    token = answer["authorizationData"][0]["authorizationToken"]
    user, password = base64.b64decode(token).decode().split(":", 1)
    subprocess.run([docker, "login", "--username", user, "--password-stdin", registry],
                   input=password, text=True, check=True, stdout=subprocess.DEVNULL)
    return registry


def main(argv: list[str] | None = None, client=None) -> int:
    parser = argparse.ArgumentParser(prog="registry-login", description=__doc__.split("\n")[0])
    parser.add_argument("image", help="the image about to be pulled")
    args = parser.parse_args(argv)
    try:
        registry = ecr_login(args.image, client, os.environ.get("DOCKER", "docker"))
    except subprocess.CalledProcessError as error:
        print(f"registry-login: docker login failed (exit status {error.returncode})",
              file=sys.stderr)
        return 1
    except Exception as error:  # botocore's errors, without importing botocore
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "") or str(error)
        print(f"registry-login: cannot get an ECR login token for {args.image}: {code}",
              file=sys.stderr)
        return 1
    if registry:
        print(f"registry-login: logged in to {registry} with the instance role")
    return 0


if __name__ == "__main__":
    sys.exit(main())
