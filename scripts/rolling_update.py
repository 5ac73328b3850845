#!/usr/bin/env python3
"""Roll a new app image across the APP hosts, one batch at a time, without dropping a request.

    python scripts/rolling_update.py --environment production --image ghcr.io/org/app:1.4.2
    python scripts/rolling_update.py --environment lab --inventory lab.yaml --image app:v2

The logic lives in the ``rollout`` package (``rollout.cli`` for the flags and exit statuses);
this file only makes it runnable from the repository root as the pipeline does.
"""
import sys
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from rollout.cli import main  # noqa: E402  (needs the path above)


def configured(environment: str) -> dict:
    """AWS mode's defaults from ``config/<environment>.yaml``: its region and the SSM
    parameter that records the deployed image."""
    from core.settings import ConfigError, load_environment
    from provisioning.parameters import deployed_image

    try:
        settings = load_environment(environment)
    except ConfigError as error:
        raise ValueError(error.problems[0]) from None
    return {"region": settings.region, "image_parameter": deployed_image(settings)}


if __name__ == "__main__":
    sys.exit(main(configured=configured))
