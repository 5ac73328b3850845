"""The user data and the secrets' permissions as they end up in the synthesized Terraform.

Uses the session's one synthesis (``cdktf_out`` in tests/conftest.py).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import subprocess

import pytest
import yaml

from core.settings import ROLES, load_environment
from modules.host import terraform_string
from provisioning import user_data
from tests.tools import require_tool

EC2_USER_DATA_LIMIT = 16 * 1024

VOLUME_REFERENCE = re.compile(r"^\$\{aws_ebs_volume\.[\w-]+\.id\}$")
BUCKET_REFERENCE = re.compile(r"^\$\{aws_s3_bucket\.[\w-]+\.bucket\}$")
# Every reference user data may hold: NFS-01's volume, the LBs' certificate bucket.
REFERENCE = re.compile(r"\$\{aws_(ebs_volume\.[\w-]+\.id|s3_bucket\.[\w-]+\.bucket)\}")
HCL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def hcl_string(expression: str, function: str) -> tuple[str, list[str]]:
    """The text of ``${FUNCTION("...")}``, decoded as Terraform reads a quoted template.

    Returns the text, with each interpolation kept as ``${...}``, and the interpolations.
    Written from the HCL spec, independently of modules/host.py's encoder.
    """
    prefix, suffix = f'${{{function}("', '")}'
    assert expression.startswith(prefix) and expression.endswith(suffix), expression[:80]
    body = expression[len(prefix):-len(suffix)]
    text, references, i = [], [], 0
    while i < len(body):
        if body.startswith(("$${", "%%{"), i):
            text.append(body[i + 1:i + 3])
            i += 3
        elif body.startswith("${", i):
            end = body.index("}", i)
            references.append(body[i:end + 1])
            text.append(body[i:end + 1])
            i = end + 1
        elif body.startswith("%{", i):
            raise AssertionError(f"a template directive in user data: {body[i:i + 40]!r}")
        elif body[i] == "\\":
            code = body[i + 1]
            if code == "u":
                text.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
            else:
                text.append(HCL_ESCAPES[code])
                i += 2
        else:
            assert body[i] != '"', "an unescaped quote ends the string early"
            text.append(body[i])
            i += 1
    return "".join(text), references


def instances(stack: dict) -> dict[str, dict]:
    return {instance["tags"]["Name"].split("-", 1)[1]: instance
            for instance in stack["resource"]["aws_instance"].values()}


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_every_host_gets_its_rendered_user_data_gzipped_by_terraform(stack_json, environment):
    settings = load_environment(environment)
    hosts = instances(stack_json(environment))
    assert sorted(hosts) == sorted(n for r in ROLES for n in settings.host_names(r))

    for name, instance in hosts.items():
        role = instance["tags"]["Role"]
        assert "user_data" not in instance
        text, references = hcl_string(instance["user_data_base64"], "base64gzip")
        # The tag hashes what the host receives, a reference counted as a placeholder.
        assert instance["tags"]["UserDataSha256"] == hashlib.sha256(
            REFERENCE.sub("${reference}", text).encode()
        ).hexdigest(), name
        if role == "nfs":
            # Terraform puts the volume's ID where the reference is; YAML quotes the
            # reference, so the documents are compared as YAML.
            (volume,) = references
            assert VOLUME_REFERENCE.match(volume)
            expected = user_data.render(settings, role, name, nfs_volume_id="vol-0abc")
            assert yaml.safe_load(text.replace(volume, "vol-0abc")) == yaml.safe_load(expected)
        elif role == "lb" and settings.load_balancer.count > 1:
            # Two LBs: the certificate bucket's name, which Terraform makes.
            (bucket,) = set(references)
            assert BUCKET_REFERENCE.match(bucket), name
            expected = user_data.render(settings, role, name, certificate_bucket="b-0abc")
            assert yaml.safe_load(text.replace(bucket, "b-0abc")) == yaml.safe_load(expected)
        else:
            assert references == [], name
            assert text == user_data.render(settings, role, name), name
        assert "user_data_base64" in instance["lifecycle"]["ignore_changes"]


def test_terraform_itself_reads_back_exactly_the_rendered_user_data(stack_json, tmp_path):
    """The real Terraform evaluates what EC2 gets; the tag is the SHA-256 of exactly that."""
    terraform = require_tool("terraform")
    settings = load_environment("production")
    expressions, expected, tags, referencing = {}, {}, {}, set()
    for name, instance in instances(stack_json("production")).items():
        role, key = instance["tags"]["Role"], name.replace("-", "_").lower()
        data = instance["user_data_base64"]
        if role == "nfs":
            # No volume exists here: its ID is put where Terraform would put it.
            (volume,) = set(re.findall(r"\$\{aws_ebs_volume\.[\w-]+\.id\}", data))
            data = data.replace(volume, "vol-0abc")
            referencing.add(key)
        if role == "lb" and settings.load_balancer.count > 1:
            # Nor does the certificate bucket (two LBs).
            (bucket,) = set(re.findall(r"\$\{aws_s3_bucket\.[\w-]+\.bucket\}", data))
            data = data.replace(bucket, "b-0abc")
            referencing.add(key)
        expressions[f"{key}_data"] = data
        tags[key] = instance["tags"]["UserDataSha256"]
        expected[key] = user_data.render(
            settings, role, name, nfs_volume_id="vol-0abc" if role == "nfs" else None,
            certificate_bucket=("b-0abc" if role == "lb" and settings.load_balancer.count > 1
                                else None)).encode()
    (tmp_path / "main.tf.json").write_text(json.dumps({"locals": expressions}))
    everything = ", ".join(f"{k} = local.{k}" for k in expressions)

    result = subprocess.run([terraform, "console"], input=f"jsonencode({{{everything}}})\n",
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    values = json.loads(json.loads(result.stdout))
    for key, text in expected.items():
        compressed = base64.b64decode(values[f"{key}_data"])
        received = gzip.decompress(compressed)
        assert len(compressed) < EC2_USER_DATA_LIMIT, (key, len(compressed))
        if key in referencing:  # YAML quotes a reference, not its value: compare as YAML
            assert yaml.safe_load(received) == yaml.safe_load(text)
        else:
            assert received == text, key
            assert tags[key] == hashlib.sha256(received).hexdigest(), key


def password_values(node, key: str = ""):
    """Every string stored under a key that names a password, anywhere in the document."""
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield from password_values(child, child_key)
    elif isinstance(node, list):
        for child in node:
            yield from password_values(child, key)
    elif isinstance(node, str) and "password" in key.lower():
        yield key, node


def test_no_secret_reaches_the_synthesized_terraform(cdktf_out):
    stacks = list(cdktf_out.glob("stacks/*/cdk.tf.json"))
    assert len(stacks) == 3
    for stack in stacks:
        text = stack.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY", text), stack
        # Nothing that would put a secret value in the Terraform state.
        for kind in ("aws_ssm_parameter", "aws_secretsmanager_secret_version",
                     "random_password", "aws_db_instance", "tls_private_key"):
            assert f'"{kind}"' not in text, (stack, kind)
        for key, value in password_values(json.loads(text)):
            # The name of an SSM parameter, or of the output that holds that name.
            assert value.startswith("/") or value == key, (stack, key, value)


def parameter_grants(stack: dict) -> dict[str, set[tuple[str, str]]]:
    """(action, parameter name) pairs per role, from the roles' policy documents."""
    grants: dict[str, set] = {}
    for key, document in stack["data"]["aws_iam_policy_document"].items():
        role = key.split("-identity")[0]
        for statement in document.get("statement", []):
            if statement.get("effect") == "Deny":
                continue  # tests/infra/test_least_privilege.py evaluates the denials
            for action in statement.get("actions", []):
                if action.startswith("ssm:") and "Parameter" in action:
                    for resource in statement["resources"]:
                        name = resource.split(":parameter", 1)[1]
                        grants.setdefault(role, set()).add((action, name))
    return grants


def test_each_secret_is_written_by_its_owner_and_read_by_its_users(stack_json):
    grants = parameter_grants(stack_json("production"))

    assert grants == {
        "db": {("ssm:PutParameter", "/webapp/production/db/password"),
               ("ssm:GetParameter", "/webapp/production/db/password")},
        "log": {(action, name) for action in ("ssm:PutParameter", "ssm:GetParameter")
                for name in ("/webapp/production/logs/*",
                             "/webapp/production/logs/filebeat-password",
                             "/webapp/production/log-ca/certificate")},
        "app": {("ssm:GetParameter", "/webapp/production/db/password"),
                ("ssm:GetParameter", "/webapp/production/logs/filebeat-password"),
                ("ssm:GetParameter", "/webapp/production/log-ca/certificate"),
                # The deployed image: read at first boot, written only by the rollout.
                ("ssm:GetParameter", "/webapp/production/app/image")},
    }


def test_terraform_strings_keep_shell_text_literal():
    encoded = terraform_string('echo "${HOME}" \\ %{x} 50%\n\ttab\x01')

    assert encoded == '"echo \\"$${HOME}\\" \\\\ %%{x} 50%\\n\\ttab\\u0001"'
    decoded = hcl_string(f"${{f({encoded})}}", "f")
    assert decoded == ('echo "${HOME}" \\ %{x} 50%\n\ttab\x01', [])


def test_terraform_strings_keep_cdk_tokens_as_references():
    encoded = terraform_string("VOLUME_ID=${TfToken[TOKEN.42]}\nHOME=${HOME}\n")

    assert encoded == '"VOLUME_ID=${TfToken[TOKEN.42]}\\nHOME=$${HOME}\\n"'


@pytest.mark.parametrize("ambiguous", ["cost: $${price}", "%%{ if x }"])
def test_terraform_strings_refuse_text_terraform_could_read_two_ways(ambiguous):
    with pytest.raises(ValueError):
        terraform_string(ambiguous)
