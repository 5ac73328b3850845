"""ssm-parameter, how hosts create and read their secrets (moto stands in for SSM)."""
from __future__ import annotations

import importlib.util
import stat

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from provisioning.cloud_config import FILES_DIR

NAME = "/webapp/test/db/password"


def load_helper():
    spec = importlib.util.spec_from_file_location("ssm_parameter",
                                                  FILES_DIR / "ssm_parameter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ssm_parameter = load_helper()


@pytest.fixture
def ssm(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        yield boto3.client("ssm", region_name="eu-west-1")


KEY = "alias/webapp-test-parameters"


def test_ensure_creates_a_random_secure_string_once(ssm, capsys):
    boto3.client("kms", region_name="eu-west-1").create_alias(
        AliasName=KEY, TargetKeyId=boto3.client("kms", region_name="eu-west-1").create_key()[
            "KeyMetadata"]["KeyId"])
    assert ssm_parameter.main(["ensure", NAME, "--key-id", KEY], client=ssm) == 0
    created = capsys.readouterr().out.strip()

    assert ssm_parameter.main(["ensure", NAME, "--key-id", KEY], client=ssm) == 0
    assert capsys.readouterr().out.strip() == created

    parameter = ssm.describe_parameters()["Parameters"][0]
    assert parameter["Type"] == "SecureString"
    assert parameter["KeyId"] == KEY  # the environment's key, never aws/ssm
    assert ssm.get_parameter(Name=NAME, WithDecryption=True)["Parameter"]["Value"] == created
    assert len(created) == 43 and created.replace("-", "").replace("_", "").isalnum()


def test_ensure_keeps_a_value_that_already_exists(ssm, capsys):
    ssm.put_parameter(Name=NAME, Value="set-by-the-first-db-host", Type="SecureString")

    assert ssm_parameter.main(["ensure", NAME], client=ssm) == 0

    assert capsys.readouterr().out == "set-by-the-first-db-host\n"


def test_ensure_refuses_to_create_a_secret_under_the_shared_key(ssm, capsys, monkeypatch):
    monkeypatch.delenv("SSM_KEY_ID", raising=False)
    assert ssm_parameter.main(["ensure", NAME], client=ssm) == 1

    assert "pass --key-id or set SSM_KEY_ID" in capsys.readouterr().err
    assert ssm.describe_parameters()["Parameters"] == []


def test_put_publishes_a_plain_string_and_replaces_it(ssm, tmp_path):
    certificate = tmp_path / "ca.crt"
    for text in ("first\n", "second\n"):
        certificate.write_text(text)
        assert ssm_parameter.main(["put", NAME, "--file", str(certificate)], client=ssm) == 0
    parameter = ssm.get_parameter(Name=NAME)["Parameter"]
    assert (parameter["Type"], parameter["Value"]) == ("String", "second\n")


def test_get_of_a_missing_parameter_fails_with_its_name(ssm, capsys):
    assert ssm_parameter.main(["get", NAME], client=ssm) == 1

    assert capsys.readouterr().err == f"ssm-parameter: cannot get {NAME}: ParameterNotFound\n"


def test_env_output_is_a_private_environment_file(ssm, tmp_path):
    ssm.put_parameter(Name=NAME, Value="s3cret", Type="SecureString")
    target = tmp_path / "env"

    assert ssm_parameter.main(["get", NAME, "--env", "ES_PASSWORD", "--output", str(target)],
                              client=ssm) == 0

    assert target.read_text() == "ES_PASSWORD=s3cret\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["env"]


class FlakyClient:
    """A client whose parameter appears after ``appears_after`` reads (another host made it)."""

    def __init__(self, appears_after: int = 0, race: bool = False, code: str = ""):
        self.reads, self.appears_after, self.race, self.code = 0, appears_after, race, code

    def get_parameter(self, Name, WithDecryption):
        self.reads += 1
        if self.code:
            raise ClientError({"Error": {"Code": self.code}}, "GetParameter")
        if self.reads <= self.appears_after:
            raise ClientError({"Error": {"Code": "ParameterNotFound"}}, "GetParameter")
        return {"Parameter": {"Value": "made-by-the-other-host"}}

    def put_parameter(self, **kwargs):
        assert kwargs["Overwrite"] is False and kwargs["Type"] == "SecureString"
        raise ClientError({"Error": {"Code": "ParameterAlreadyExists"}}, "PutParameter")


def test_get_waits_for_a_parameter_another_host_creates():
    client, waited = FlakyClient(appears_after=3), []
    clock = iter(range(0, 1000, 10))

    value = ssm_parameter.get(client, NAME, wait_seconds=60, sleep=waited.append,
                              clock=lambda: next(clock))

    assert value == "made-by-the-other-host"
    assert client.reads == 4
    assert len(waited) == 3 and all(0 <= seconds <= 10 for seconds in waited)


def test_get_gives_up_when_the_wait_is_over():
    clock = iter(range(0, 1000, 10))
    with pytest.raises(ClientError):
        ssm_parameter.get(FlakyClient(appears_after=99), NAME, wait_seconds=25,
                          sleep=lambda s: None, clock=lambda: next(clock))


def test_ensure_takes_the_other_hosts_value_when_both_create_at_once():
    assert ssm_parameter.ensure(FlakyClient(appears_after=1), NAME,
                                key_id="alias/k") == "made-by-the-other-host"


def test_a_denied_read_is_reported_as_such(capsys):
    assert ssm_parameter.main(["get", NAME], client=FlakyClient(code="AccessDeniedException")) == 3
    assert "AccessDeniedException" in capsys.readouterr().err
