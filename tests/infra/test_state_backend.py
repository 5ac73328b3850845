"""The S3 backend names the bootstrap's KMS key, in a form the real terraform accepts."""
from __future__ import annotations

import json
import os
import subprocess

from tests.tools import require_tool

INVALID_KEY = "Invalid KMS Key ID"


def init_backend(directory, backend: dict) -> str:
    (directory / "main.tf.json").write_text(json.dumps({"terraform": {"backend": {"s3": backend}}}))
    # No network and fake credentials: init gets past the backend's validation, then fails
    # reaching AWS.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00", "CHECKPOINT_DISABLE": "1",
           "AWS_SECRET_ACCESS_KEY": "example", "AWS_EC2_METADATA_DISABLED": "true",
           "TF_CLI_CONFIG_FILE": os.devnull}
    result = subprocess.run([require_tool("terraform"), f"-chdir={directory}", "init",
                             "-input=false", "-no-color"], capture_output=True, text=True,
                            env=env, timeout=180)
    assert result.returncode != 0
    return " ".join((result.stdout + result.stderr).split())


def test_the_environment_backend_encrypts_with_the_bootstraps_key(stack_json, tmp_path):
    backend = stack_json("production")["terraform"]["backend"]["s3"]
    (bootstrap_alias,) = {alias["name"] for alias in stack_json("bootstrap")["resource"][
        "aws_kms_alias"].values()}
    assert backend["encrypt"] is True and backend["kms_key_id"] == bootstrap_alias
    output = init_backend(tmp_path, backend)
    assert INVALID_KEY not in output and "Initializing the backend" in output


def test_terraform_would_refuse_a_malformed_key(stack_json, tmp_path):
    """The control: terraform does check kms_key_id before reaching AWS."""
    backend = {**stack_json("production")["terraform"]["backend"]["s3"],
               "kms_key_id": "webapp-terraform-state"}
    assert INVALID_KEY in init_backend(tmp_path, backend)
