"""Shared test helpers."""
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cdktf_out(tmp_path_factory) -> Path:
    """The default configuration synthesized once per test session, as ``python main.py`` does.

    In-process, so the CDK and the provider bindings are loaded once for the whole suite.
    """
    import main

    outdir = tmp_path_factory.mktemp("synth") / "cdktf.out"
    assert main.main(["--outdir", str(outdir)]) == 0
    return outdir


@pytest.fixture(scope="session")
def stack_json(cdktf_out):
    """``stack_json(name)``: the parsed Terraform JSON of one synthesized stack."""
    cache: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = json.loads((cdktf_out / "stacks" / name / "cdk.tf.json").read_text())
        return cache[name]
    return load
