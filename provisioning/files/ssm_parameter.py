#!/usr/bin/env python3
"""ssm-parameter: read or create a SecureString in SSM Parameter Store with the host's role.

    ssm-parameter get NAME [--wait SECONDS]   print the value, waiting for it to exist
    ssm-parameter ensure NAME                 print the value, first creating a random one
                                              if the parameter does not exist yet

    ssm-parameter put NAME --file FILE        store FILE's text as a plain String (not a
                                              secret: a CA certificate), replacing it

``--env VAR`` prints ``VAR=value`` instead (a Docker or systemd environment file) and
``--output FILE`` writes it to FILE, mode 0600, instead of stdout. ``ensure`` encrypts with
``--key-id`` (default ``$SSM_KEY_ID``), the environment's own KMS key, whose key policy names
the roles that may decrypt each parameter.

Secrets are generated on the host that owns them (DB-01, LOG-01) and never pass through user
data, Terraform or its state. ``ensure`` never overwrites: a replaced host finds the existing
value, so the hosts that read it keep working. Installed on the hosts as
/usr/local/sbin/ssm-parameter; needs Ubuntu's python3-boto3.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time

GENERATED_BYTES = 32  # token_urlsafe: 43 characters, safe in URLs and environment files
WAIT_INTERVAL_SECONDS = 10
EXIT_FAILURE, EXIT_ACCESS = 1, 3


def _client(region: str | None):
    import boto3  # imported here so that --help works without it

    return boto3.client("ssm", region_name=region)


def _error_code(error: Exception) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Code", "")


def get(client, name: str, wait_seconds: float = 0, sleep=time.sleep,
        clock=time.monotonic) -> str:
    """The decrypted value of ``name``; waits up to ``wait_seconds`` for it to be created."""
    deadline = clock() + wait_seconds
    while True:
        try:
            return client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except Exception as error:  # botocore's ClientError, without importing botocore
            if _error_code(error) != "ParameterNotFound" or clock() >= deadline:
                raise
        sleep(min(WAIT_INTERVAL_SECONDS, max(deadline - clock(), 0)))


def ensure(client, name: str, description: str = "", key_id: str | None = None) -> str:
    """The value of ``name``, created first as a random SecureString if it does not exist."""
    try:
        return get(client, name)
    except Exception as error:
        if _error_code(error) != "ParameterNotFound":
            raise
    value = secrets.token_urlsafe(GENERATED_BYTES)
    # Without a key, SSM would use aws/ssm, which any principal of the account may use.
    if not key_id:
        raise ValueError("no KMS key for the SecureString: pass --key-id or set SSM_KEY_ID")
    try:
        client.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=False,
                             KeyId=key_id,
                             Description=description or "Generated on its host; see docs/hosts.md")
        return value
    except Exception as error:
        if _error_code(error) != "ParameterAlreadyExists":
            raise
    # Another host created it between our get and put: theirs is the one in use.
    return get(client, name)


def put(client, name: str, text: str) -> None:
    """Store ``text`` as a plain String parameter, replacing the previous value."""
    client.put_parameter(Name=name, Value=text, Type="String", Overwrite=True,
                         Description="Published by its host; see docs/hosts.md")


def write_output(text: str, path: str | None) -> None:
    """Print ``text``, or write it atomically to ``path`` readable by its owner only."""
    if path is None:
        sys.stdout.write(text)
        return
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".ssm-parameter.")
    try:
        with os.fdopen(descriptor, "w") as stream:  # mkstemp: mode 0600 already
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv: list[str] | None = None, client=None) -> int:
    parser = argparse.ArgumentParser(prog="ssm-parameter", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["get", "ensure", "put"])
    parser.add_argument("name", help="parameter name, e.g. /webapp/production/db/password")
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="get: wait this long for the parameter to exist (default 0)")
    parser.add_argument("--env", metavar="VAR", help="print VAR=value instead of the value")
    parser.add_argument("--output", metavar="FILE", help="write to FILE (mode 0600)")
    parser.add_argument("--key-id", default=os.environ.get("SSM_KEY_ID"),
                        help="ensure: the KMS key of a new SecureString (default: $SSM_KEY_ID)")
    parser.add_argument("--file", help="put: the file whose text is stored")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION"),
                        help="AWS region (default: $AWS_REGION)")
    args = parser.parse_args(argv)
    if (args.action == "put") != (args.file is not None):
        parser.error("--file goes with put, and put needs it")
    if client is None:
        client = _client(args.region)
    try:
        if args.action == "put":
            with open(args.file) as stream:
                put(client, args.name, stream.read())
            return 0
        value = (get(client, args.name, args.wait) if args.action == "get"
                 else ensure(client, args.name, key_id=args.key_id))
    except Exception as error:
        code = _error_code(error)
        print(f"ssm-parameter: cannot {args.action} {args.name}: {code or error}",
              file=sys.stderr)
        return EXIT_ACCESS if code in ("AccessDeniedException", "AccessDenied") else EXIT_FAILURE
    write_output(f"{args.env}={value}\n" if args.env else value + "\n", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
