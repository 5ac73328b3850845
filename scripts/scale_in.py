#!/usr/bin/env python3
"""Before ``terraform apply``: take the APP hosts a saved plan destroys out of every LB.

    python scripts/scale_in.py --environment production --leaving-from-plan plan.json

``plan.json`` is ``terraform show -json`` of the saved plan. This is
``rolling_update.py --sync-only --leaving-from-plan``: each Caddy's upstream list loses those
hosts once their requests in flight are done (one config change per LB), and nothing else
changes; a plan that destroys no APP host touches nothing. Without it, lowering
``app.host_count`` lets the apply terminate hosts that are still in the upstreams.
"""
import sys
from pathlib import Path

SCRIPTS = str(Path(__file__).resolve().parent)
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

import rolling_update  # noqa: E402  (needs the path above)

if __name__ == "__main__":
    sys.exit(rolling_update.main(["--sync-only", *sys.argv[1:]],
                                 configured=rolling_update.configured))
