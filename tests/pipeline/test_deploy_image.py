"""deploy.yml's image job, its shell steps run for real with bash: the tag it accepts (the
same as app-deploy on the hosts, the rolling update and the configuration); each run pushes
under a tag of its own, so a re-run builds again instead of failing on the immutable tag, and
an image some other principal pushed under that tag is never rolled out."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pipeline_support import REPO_ROOT, WORKFLOWS

from core.settings import _IMAGE_REFERENCE
from rollout.cli import _IMAGE

REPOSITORY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/webapp/app"
SHA = "3f2c1d0" + "a" * 33
RUN = {"GITHUB_RUN_ID": "12345678901", "GITHUB_RUN_ATTEMPT": "2"}
OWN_TAG = f"{SHA}-12345678901-2"

# tag -> a valid Docker tag?
TAGS = {
    "3f2c1d0": True, SHA: True, "v1.2.3": True, "V1.2.3": True, "Release_2026.12-RC1": True,
    "_x": True, "a" * 128: True, "LATEST": True,
    "-x": False, ".x": False, "a" * 129: False, "a b": False, "a/b": False, "a:b": False,
    "é": False, "a@b": False,
}


def step(name_start: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text(encoding="utf-8"))
    (found,) = [s for s in workflow["jobs"]["image"]["steps"]
                if s.get("name", "").startswith(name_start)]
    return found


def run_step(tmp_path: Path, name_start: str,
             env: dict) -> tuple[subprocess.CompletedProcess, dict]:
    """As GitHub runs a ``run`` step: bash -e -o pipefail, outputs through GITHUB_OUTPUT."""
    script = tmp_path / "step.sh"
    script.write_text(step(name_start)["run"])
    output = tmp_path / "output"
    output.write_text("")
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), "GITHUB_SHA": SHA,
             **RUN, **env}, capture_output=True, text=True, timeout=30)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return result, outputs


def app_deploy_accepts(image: str) -> bool:
    text = (REPO_ROOT / "provisioning" / "files" / "app-deploy.sh").read_text()
    pattern = re.search(r"^readonly IMAGE_PATTERN='([^']+)'$", text, re.MULTILINE)[1]
    result = subprocess.run(["bash", "-c", '[[ $1 =~ $2 ]]', "-", image, pattern],
                            env={"LC_ALL": "C.UTF-8", "PATH": os.environ["PATH"]})
    return result.returncode == 0


@pytest.mark.parametrize("tag", TAGS)
def test_the_workflow_the_hosts_and_the_rollout_accept_the_same_tags(tmp_path, tag):
    result, outputs = run_step(tmp_path, "Name the image", {
        "REQUESTED_TAG": tag, "REPOSITORY": REPOSITORY,
        "ROLE_ARN": "arn:aws:iam::123456789012:role/webapp-staging-deploy"})
    image = f"{REPOSITORY}:{tag}"
    accepted = {
        "deploy.yml": result.returncode == 0,
        "app-deploy": app_deploy_accepts(image),
        "rolling_update.py": bool(_IMAGE.match(image)),
        "app.image": bool(_IMAGE_REFERENCE.fullmatch(image)),
    }
    assert accepted == dict.fromkeys(accepted, TAGS[tag]), result.stdout
    if TAGS[tag]:
        assert outputs["image"] == image and outputs["tag"] == tag
        assert outputs["repository"] == "webapp/app"
    else:
        assert result.stdout.startswith("::error::input image_tag: ")


def test_the_repository_part_stays_lower_case_everywhere():
    image = f"{REPOSITORY.replace('webapp/app', 'WebApp/app')}:v1"
    assert not app_deploy_accepts(image)
    assert not _IMAGE.match(image) and not _IMAGE_REFERENCE.fullmatch(image)


def fake_aws(tmp_path: Path, status: int, stdout: str = "", stderr: str = "") -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "aws-calls"
    aws = bin_dir / "aws"
    aws.write_text(f'#!/bin/bash\necho "$*" >> {calls}\nprintf %s {stdout!r}\n'
                   f'printf %s {stderr!r} >&2\nexit {status}\n')
    aws.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


NOT_FOUND = ("An error occurred (ImageNotFoundException) when calling the DescribeImages "
             "operation: The image with imageId {imageTag:'x'} does not exist")


def check_step(tmp_path, env, requested=""):
    tag = requested or OWN_TAG
    return run_step(tmp_path, "Check the tag", {
        **env, "REPOSITORY": "webapp/app", "TAG": tag, "IMAGE": f"{REPOSITORY}:{tag}",
        "REQUESTED_TAG": requested})


def test_each_run_and_each_attempt_names_its_own_tag(tmp_path):
    role = {"REPOSITORY": REPOSITORY, "ROLE_ARN": "arn:aws:iam::123456789012:role/x"}
    result, outputs = run_step(tmp_path, "Name the image", role)
    assert result.returncode == 0, result.stdout
    assert outputs["tag"] == OWN_TAG and outputs["image"] == f"{REPOSITORY}:{OWN_TAG}"
    assert app_deploy_accepts(outputs["image"]) and _IMAGE.match(outputs["image"])


def test_a_new_tag_is_built_and_pushed(tmp_path):
    result, outputs = check_step(tmp_path, fake_aws(tmp_path, 254, stderr=NOT_FOUND))
    assert result.returncode == 0, result.stderr
    assert outputs == {"build": "true"}
    call = (tmp_path / "aws-calls").read_text()
    assert "ecr describe-images --repository-name webapp/app" in call
    assert f"--image-ids imageTag={OWN_TAG}" in call


def test_an_image_someone_else_pushed_under_this_runs_tag_is_refused(tmp_path):
    """Any deploy role may push: one that raced the build under its tag must not be rolled
    out to staging and then production."""
    env = fake_aws(tmp_path, 0, stdout="sha256:" + "b" * 64)
    result, outputs = check_step(tmp_path, env)
    assert result.returncode == 1 and outputs == {}
    assert result.stdout.startswith("::error::") and "refusing" in result.stdout


def test_a_requested_tag_in_the_repository_is_rolled_out_unbuilt(tmp_path):
    env = fake_aws(tmp_path, 0, stdout="sha256:" + "b" * 64)
    result, outputs = check_step(tmp_path, env, requested="v1.2.3")
    assert result.returncode == 0, result.stderr
    assert outputs == {"build": "false"}


def test_a_requested_tag_that_is_not_there_stops_the_run(tmp_path):
    result, outputs = check_step(tmp_path, fake_aws(tmp_path, 254, stderr=NOT_FOUND),
                                 requested=SHA)
    assert result.returncode == 1 and outputs == {}
    assert result.stdout.startswith("::error::input image_tag: ")


def test_any_other_failure_stops_the_run_rather_than_pushing(tmp_path):
    denied = "An error occurred (AccessDeniedException) when calling the DescribeImages"
    result, outputs = check_step(tmp_path, fake_aws(tmp_path, 254, stderr=denied))
    assert result.returncode == 1 and outputs == {}
    assert "AccessDeniedException" in result.stderr


def test_the_build_runs_only_when_the_image_is_missing():
    workflow = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["image"]["steps"]
    gated = [s for s in steps if s.get("uses", "").startswith(
        ("docker/build-push-action@", "docker/setup-buildx-action@"))]
    assert len(gated) == 2
    assert all(s["if"] == "steps.exists.outputs.build == 'true'" for s in gated)


@pytest.mark.parametrize("image", ["-v/tmp", "--rm/x", "--privileged/app:v1", "-x"])
def test_nothing_that_docker_would_read_as_an_option_passes_for_an_image(image):
    assert not app_deploy_accepts(image)
    assert not _IMAGE.match(image) and not _IMAGE_REFERENCE.fullmatch(image)
