"""Stacks wire constructs together; ``build_app`` makes the whole cdktf app."""
from __future__ import annotations

from core.cdk import App
from core.settings import Settings
from stacks.bootstrap import BootstrapStack
from stacks.environment import EnvironmentStack


def build_app(environments: list[Settings], outdir: str) -> App:
    """One stack per environment plus the bootstrap stack that serves them all."""
    # No stack traces in the output: they name local paths and make synthesis unrepeatable.
    app = App(outdir=outdir, stack_traces=False)
    BootstrapStack(app, "bootstrap", environments)
    for settings in environments:
        EnvironmentStack(app, settings)
    return app
