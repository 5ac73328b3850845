"""registry-login, how APP hosts pull from Amazon ECR with their instance role (botocore's
Stubber stands in for ECR, a recording script for docker)."""
from __future__ import annotations

import base64
import importlib.util
import json
import sys

import boto3
import pytest
from botocore.stub import Stubber

from provisioning.cloud_config import FILES_DIR
from tests.provisioning.conftest import fake_command

REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
IMAGE = f"{REGISTRY}/webapp/app:3f2c1d0"
PASSWORD = "eyJwYXlsb2FkIjoiZWNyLXRva2VuIn0-not-a-real-token"


def load_helper():
    spec = importlib.util.spec_from_file_location("registry_login",
                                                  FILES_DIR / "registry_login.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


registry_login = load_helper()


RECORDING_DOCKER = """
import json, os, sys
with open(os.environ["DOCKER_CALLS"], "a") as calls:
    calls.write(json.dumps({"argv": sys.argv[1:], "stdin": sys.stdin.read()}) + "\\n")
"""


@pytest.fixture
def docker(tmp_path, monkeypatch):
    """A docker that records its arguments and what it read on stdin."""
    record = tmp_path / "docker-calls.jsonl"
    script = tmp_path / "docker.py"
    script.write_text(RECORDING_DOCKER)
    fake_command(tmp_path, "docker", f'exec "{sys.executable}" "{script}" "$@"\n')
    monkeypatch.setenv("DOCKER", str(tmp_path / "docker"))
    monkeypatch.setenv("DOCKER_CALLS", str(record))
    return record


def calls(record) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] \
        if record.exists() else []


def stubbed_ecr(token_user="AWS", account="123456789012", error=None):
    client = boto3.client("ecr", region_name="eu-west-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    stubber = Stubber(client)
    if error:
        stubber.add_client_error("get_authorization_token", service_error_code=error,
                                 expected_params={"registryIds": [account]})
    else:
        token = base64.b64encode(f"{token_user}:{PASSWORD}".encode()).decode()
        stubber.add_response("get_authorization_token", {"authorizationData": [{
            "authorizationToken": token, "proxyEndpoint": f"https://{REGISTRY}"}]},
            expected_params={"registryIds": [account]})
    stubber.activate()
    return client, stubber


def test_an_ecr_image_logs_docker_in_with_the_password_on_stdin_only(docker, capsys):
    client, stubber = stubbed_ecr()

    assert registry_login.main([IMAGE], client=client) == 0

    stubber.assert_no_pending_responses()
    (call,) = calls(docker)
    assert call["argv"] == ["login", "--username", "AWS", "--password-stdin", REGISTRY]
    assert call["stdin"] == PASSWORD
    assert PASSWORD not in " ".join(call["argv"])  # `ps` never shows it
    assert capsys.readouterr().out == f"registry-login: logged in to {REGISTRY} with the " \
        "instance role\n"


@pytest.mark.parametrize("image", ["ghcr.io/example-org/app:1.4.2", "caddy:2.11.7",
                                   "docker.elastic.co/beats/filebeat:8.19.21",
                                   "localhost:5000/app:1"])
def test_other_registries_need_no_login(docker, image):
    assert registry_login.main([image], client=object()) == 0
    assert calls(docker) == []


def test_an_ecr_image_of_another_partition_and_region_is_recognised():
    match = registry_login.ECR_REGISTRY.match("210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn")
    assert match["account"] == "210987654321" and match["region"] == "cn-north-1"


def test_a_role_without_permission_fails_with_one_line(docker, capsys):
    client, _ = stubbed_ecr(error="AccessDeniedException")

    assert registry_login.main([IMAGE], client=client) == 1

    assert capsys.readouterr().err == (f"registry-login: cannot get an ECR login token for "
                                       f"{IMAGE}: AccessDeniedException\n")
    assert calls(docker) == []


def test_app_deploy_logs_in_before_every_pull(tmp_path, clean_env):
    """The real app-deploy, with a recording registry-login and a docker whose pull fails."""
    from tests.provisioning.conftest import run_script

    events = tmp_path / "events"
    login = fake_command(tmp_path, "registry-login", f'echo "login $1" >> "{events}"\n')
    docker = fake_command(tmp_path, "docker", f'echo "docker $1" >> "{events}"\n'
                          '[[ $1 != pull ]] || exit 1\n[[ $1 != inspect && $1 != image ]]\n')
    result = run_script("app-deploy.sh", IMAGE, env={
        **clean_env, "APP_DEPLOY_CONFIG": str(tmp_path / "absent.env"),
        "REGISTRY_LOGIN": str(login), "DOCKER": str(docker), "RUN_DIR": str(tmp_path / "run"),
        "STATE_DIR": str(tmp_path / "state"), "DRAIN_SECONDS": "0"})

    assert result.returncode == 1
    assert f"cannot pull {IMAGE}" in result.stderr
    lines = events.read_text().splitlines()
    assert lines.index(f"login {IMAGE}") < lines.index("docker pull")
