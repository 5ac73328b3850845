#!/usr/bin/env python3
"""Write dev/caddy.json, the local load balancer's config, with LB-01's own generator.

    python dev/render_caddy_config.py           # rewrite dev/caddy.json
    python dev/render_caddy_config.py --check   # exit 1 if dev/caddy.json is out of date

The Compose service ``lb`` runs the official Caddy image with this file, so the local stack
has production's shape: one reverse proxy in front of the app, active health checks against
the health agent on port 5001 (the drain switch), passive checks, the same retry policy and
JSON access logs. Only the addresses differ: the upstream is the Compose service ``app`` and
there is no domain, so Caddy serves plain HTTP on port 80 inside its container.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from provisioning.caddy import caddy_config  # noqa: E402  (needs the repository on sys.path)

TARGET = REPO / "dev" / "caddy.json"
# Compose service name and port of the app; the health agent shares the app's network, so
# Caddy's active checks reach it on the same host name at its own port.
LOCAL_UPSTREAMS = ["app:5000"]


def render() -> str:
    """The file's exact text: stable key order and a final newline, for clean diffs."""
    config = caddy_config(LOCAL_UPSTREAMS, domain=None, health_port=5001,
                          admin_listen="localhost:2019")
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare; exit 1 if the file is stale")
    args = parser.parse_args(argv)
    wanted = render()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args.check:
        if current != wanted:
            print(f"error: {TARGET.relative_to(REPO)} is out of date with "
                  "provisioning/caddy.py; run `python dev/render_caddy_config.py`",
                  file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        TARGET.write_text(wanted, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
