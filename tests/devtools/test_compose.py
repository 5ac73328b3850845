"""The local stack (compose.yaml and dev/): valid, pinned, loopback-only, secret-free, and
the same shape as production. There is no Docker engine in CI or here, so the file is checked
against the Compose specification and its promises are asserted one by one; the small shell
programs it runs are executed for real."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.settings import APP_PORT, HEALTH_AGENT_PORT, POSTGRES_PORT, load_environment
from provisioning import images
from provisioning.caddy import MINIMUM_CADDY_VERSION, caddy_config
from provisioning.logging_stack import filebeat_config

from tests import tools
from tests.tools import venv_tool

from .conftest import COMPOSE_FILE, REPO_ROOT

DEV_DOCKERFILE = REPO_ROOT / "dev" / "Dockerfile"
DEV_DOCKERIGNORE = REPO_ROOT / "dev" / "Dockerfile.dockerignore"
CADDY_JSON = REPO_ROOT / "dev" / "caddy.json"

CORE_SERVICES = {"db-password", "db", "app", "health-agent", "lb"}
LOG_SERVICES = {"elasticsearch", "kibana", "filebeat"}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL",
                         re.IGNORECASE)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
VERSION_TAG = re.compile(r"^(?P<version>\d+(?:\.\d+)+)(?:-[a-z0-9.]+)*$")


def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def one_shot_services(compose: dict) -> set[str]:
    """Services others wait for with service_completed_successfully: they run and exit."""
    return {dependency for service in services(compose).values()
            for dependency, rule in (service.get("depends_on") or {}).items()
            if rule.get("condition") == "service_completed_successfully"}


def long_running(compose: dict) -> dict[str, dict]:
    """Servers: neither one-shot jobs nor the `tools` profile's command container."""
    skip = one_shot_services(compose)
    return {name: service for name, service in services(compose).items()
            if name not in skip and "tools" not in service.get("profiles", [])}


def interpolate(value: str) -> str:
    """Compose's variable substitution with every variable unset: the defaults must suffice."""
    def replace(match: re.Match) -> str:
        if match["op"] not in (":-", "-"):
            raise AssertionError(f"{value!r}: ${{{match['name']}}} has no default, so "
                                 "`docker compose up` would need a .env file")
        return match["arg"]
    return INTERPOLATION.sub(replace, value).replace("$$", "$")


def published_ports(service: dict) -> list[tuple[str, str, str]]:
    """``(host_ip, host_port, container_port)`` of every published port, either syntax."""
    found = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            found.append((entry.get("host_ip", ""), str(entry.get("published", "")),
                          str(entry["target"])))
            continue
        parts = interpolate(str(entry)).split(":")
        if len(parts) == 3:
            found.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            found.append(("", parts[0], parts[1]))
        else:
            found.append(("", "", parts[0]))
    return found


def image_tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image}: no tag; pin a version"
    return tag


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def volume_mounts(service: dict) -> list[tuple[str, str, str]]:
    """``(source, target, mode)`` of each short-syntax volume."""
    mounts = []
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        mounts.append((source, target, mode[0] if mode else "rw"))
    return mounts


# ---------------------------------------------------------------------------- the file

def test_compose_file_passes_the_compose_specification_schema():
    result = subprocess.run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE_FILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_itself_accepts_the_file_when_installed():
    """`docker compose config` needs no engine; GitHub's runners have the plugin.

    Only there: no package registry ships the plugin for Debian, so elsewhere this check is
    skipped and the schema check above stands alone.
    """
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                       check=False).returncode == 0
    if not plugin:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "--file", str(COMPOSE_FILE), "--profile", "tools", "--profile",
         "logs", "config", "--quiet"], capture_output=True, text=True, check=False,
        cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr


def test_services_and_profiles(compose):
    by_profile: dict[str, set[str]] = {}
    for name, service in services(compose).items():
        for profile in service.get("profiles", [""]):
            by_profile.setdefault(profile, set()).add(name)
    # `docker compose up` starts the application's stack and nothing else...
    assert by_profile[""] == CORE_SERVICES
    # ...the tools container runs on demand, and the log stack is opt-in.
    assert by_profile["tools"] == {"dev"}
    assert by_profile["logs"] == LOG_SERVICES


def test_every_server_has_a_health_check(compose):
    for name, service in long_running(compose).items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert "retries" in check and "interval" in check, f"{name}: give it a time budget"


def test_every_dependency_waits_on_a_condition_that_means_ready(compose):
    wanted = {
        "db": {"db-password": "service_completed_successfully"},
        "app": {"db": "service_healthy"},
        "health-agent": {"app": "service_healthy"},
        "lb": {"health-agent": "service_healthy"},
        "kibana": {"elasticsearch": "service_healthy"},
        "filebeat": {"elasticsearch": "service_healthy", "app": "service_healthy"},
    }
    actual = {name: {dep: rule.get("condition") for dep, rule in
                     (service.get("depends_on") or {}).items()}
              for name, service in services(compose).items() if service.get("depends_on")}
    assert actual == wanted
    for name, dependencies in actual.items():
        for dependency, condition in dependencies.items():
            if condition == "service_healthy":
                assert services(compose)[dependency].get("healthcheck"), (
                    f"{name} waits for {dependency} to be healthy, but it has no health check")


def test_one_shot_jobs_are_waited_for_so_that_up_wait_succeeds(compose):
    """`docker compose up --wait` accepts an exited container only if a server adopts it."""
    for name in one_shot_services(compose):
        job = services(compose)[name]
        assert "healthcheck" not in job and "ports" not in job, name
        assert name in CORE_SERVICES | LOG_SERVICES


def test_every_image_is_pinned_to_a_version(compose):
    for name, service in services(compose).items():
        image = service.get("image")
        assert image, f"{name}: name the image, also when it is built, so it is never `latest`"
        tag = image_tag(image)
        assert tag != "latest", f"{name}: {image}"
        if "build" in service:
            assert tag == "local", f"{name}: a locally built image is tagged `local`"
        else:
            assert VERSION_TAG.match(tag), f"{name}: {image} is not pinned to a version"


def test_the_dev_dockerfile_pins_every_base_image_and_tool():
    text = DEV_DOCKERFILE.read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert len(bases) == 3
    for base in bases:
        assert VERSION_TAG.match(image_tag(base)), f"{base} is not pinned to a version"
    python = next(b for b in bases if b.startswith("python:"))
    node = next(b for b in bases if b.startswith("node:"))
    assert image_tag(python).startswith("3.11."), "the tools image runs Python 3.11"
    assert image_tag(node).startswith("24."), "jsii and the cdktf CLI need Node 24"
    assert "latest" not in text


def test_the_dev_image_uses_the_versions_pinned_elsewhere():
    dockerfile = DEV_DOCKERFILE.read_text(encoding="utf-8")
    # The cdktf CLI matches the cdktf library of requirements.txt...
    library = re.search(r"^cdktf==(\S+)", (REPO_ROOT / "requirements.txt").read_text(),
                        re.MULTILINE)
    cli = re.search(r"^ARG CDKTF_CLI_VERSION=(\S+)", dockerfile, re.MULTILINE)
    assert library and cli and cli[1] == library[1]
    # ...and Terraform the version every workflow installs.
    terraform = re.search(r"^FROM hashicorp/terraform:(\S+)", dockerfile, re.MULTILINE)
    workflows = {m for path in (REPO_ROOT / ".github" / "workflows").glob("*.y*ml")
                 for m in re.findall(r'TERRAFORM_VERSION:\s*"?([\d.]+)"?', path.read_text())}
    assert terraform and workflows == {terraform[1]}


def test_make_test_in_the_dev_container_uses_the_ready_made_virtualenv(compose):
    """The Makefile installs into $(VENV) unless its stamp files are there: the image makes
    them, so `docker compose run --rm dev make test` installs nothing."""
    dev = services(compose)["dev"]
    venv = environment(dev)["VENV"]
    dockerfile = DEV_DOCKERFILE.read_text(encoding="utf-8")
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    stamps = set(re.findall(r"^\$\(VENV\)/(\.\S+):", makefile, re.MULTILINE))
    assert stamps, "the Makefile's stamp targets moved; update dev/Dockerfile"
    assert re.search(r"^VENV \?=", makefile, re.MULTILINE), "VENV must be overridable"
    for stamp in stamps:
        assert f"{venv}/{stamp}" in dockerfile, f"dev/Dockerfile does not create {stamp}"
    assert f"python -m venv {venv}" in dockerfile
    assert dev["command"] == ["make", "test"]
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in readme


def test_the_dev_build_context_holds_what_the_dockerfile_copies():
    ignore = DEV_DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore
    copied = set()
    for sources in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$",
                              DEV_DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE):
        copied.update(sources.split())
    assert copied and copied <= allowed
    for path in copied:
        assert (REPO_ROOT / path).is_file(), f"dev/Dockerfile copies {path}, which is missing"


def test_every_bind_mount_source_exists(compose):
    named = set(compose.get("volumes", {}))
    for name, service in services(compose).items():
        for source, target, _ in volume_mounts(service):
            if source.startswith(("./", "/")) or source == ".":
                if source.startswith("/var/"):
                    continue  # the Docker host's own files (Filebeat)
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}: missing"
            else:
                assert source in named, f"{name} mounts undeclared volume {source}"


# ------------------------------------------------------------------------------- safety

def test_every_published_port_is_bound_to_loopback(compose):
    seen = 0
    for name, service in services(compose).items():
        assert service.get("network_mode") != "host", f"{name} would bypass port binding"
        for host_ip, host_port, container_port in published_ports(service):
            seen += 1
            assert host_ip == "127.0.0.1", (
                f"{name} publishes {container_port} on {host_ip or 'every interface'}")
            assert host_port.isdigit(), f"{name}: {host_port!r} is not a port"
    assert seen >= 5


def test_the_app_is_reached_through_the_lb_on_the_documented_ports(compose):
    ports = {name: published_ports(service) for name, service in services(compose).items()}
    assert ports["lb"] == [("127.0.0.1", "8080", "80")]
    assert ports["app"] == [("127.0.0.1", str(APP_PORT), str(APP_PORT))]
    assert ports["db"] == [("127.0.0.1", str(POSTGRES_PORT), str(POSTGRES_PORT))]


def test_no_secret_is_written_in_plain_text(compose):
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert not re.search(r"^\s*(secrets|env_file):", text, re.MULTILINE), (
        "the stack generates its secret; no file from the repository is needed")
    for name, service in services(compose).items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert key.endswith("_FILE"), (
                    f"{name}: {key} holds a secret in the file; pass a *_FILE path instead")
                assert value.startswith("/run/dev-secrets/"), f"{name}: {key}={value}"
                mounts = {target: (source, mode) for source, target, mode
                          in volume_mounts(service)}
                assert mounts.get("/run/dev-secrets") == ("dev-secrets", "ro"), (
                    f"{name} reads {value} but does not mount the secret volume read-only")
    # No .env file is committed for Compose to pick up.
    tracked = subprocess.run(["git", "ls-files", "--", ".env", "*.env"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=False)
    assert tracked.stdout.strip() == ""


def _run_entrypoint(service: dict, environment: dict, *command: str):
    """Run a service's `sh -c` entrypoint here, as the container would."""
    entrypoint = [part.replace("$$", "$") for part in service["entrypoint"]]
    assert entrypoint[:2] == ["sh", "-c"]
    return subprocess.run([*entrypoint, *command], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **environment}, check=False)


def test_the_password_is_generated_once_and_then_kept(compose, tmp_path):
    generator = services(compose)["db-password"]
    assert generator.get("network_mode") == "none"
    assert ("dev-secrets", "/secrets", "rw") in volume_mounts(generator)
    script = generator["entrypoint"][2].replace("/secrets/", f"{tmp_path}/")
    run = [generator["entrypoint"][0], generator["entrypoint"][1], script]

    assert subprocess.run(run, check=False).returncode == 0
    secret = tmp_path / "db_password"
    first = secret.read_text()
    assert re.fullmatch(r"[0-9a-f]{48}", first), "24 random bytes, hex"
    # Readable by the app (UID 10001) and PostgreSQL (UID 999), which share the volume only.
    assert stat.S_IMODE(secret.stat().st_mode) == 0o644

    assert subprocess.run(run, check=False).returncode == 0
    assert secret.read_text() == first, "a second start must not change the password"
    assert [p.name for p in tmp_path.iterdir()] == ["db_password"]


def test_the_password_reaches_the_app_from_the_file_only(compose, tmp_path):
    secret = tmp_path / "db_password"
    secret.write_text("s3cr3t-from-file")
    result = _run_entrypoint(services(compose)["app"], {"DB_PASSWORD_FILE": str(secret)},
                             sys.executable, "-c", "import os; print(os.environ['DB_PASSWORD'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "s3cr3t-from-file"
    assert environment(services(compose)["app"])["DB_PASSWORD_FILE"] == (
        "/run/dev-secrets/db_password")


def test_the_tools_container_stays_out_of_the_databases_way(compose):
    """The e2e tests run their own PostgreSQL; libpq variables would redirect their clients."""
    dev = services(compose)["dev"]
    assert not [key for key in environment(dev) if key.startswith(("PG", "DB_"))]
    assert "depends_on" not in dev and "entrypoint" not in dev
    only_readers = {name for name, service in services(compose).items()
                    if any(source == "dev-secrets" for source, _, _ in volume_mounts(service))}
    assert only_readers == {"db-password", "db", "app"}


def test_a_missing_password_file_stops_the_service(compose, tmp_path):
    result = _run_entrypoint(services(compose)["app"], {
        "DB_PASSWORD_FILE": str(tmp_path / "absent")}, "true")
    assert result.returncode != 0


# ------------------------------------------------------------------ same shape as prod

def test_db_runs_the_postgresql_major_of_db01(compose):
    tag = image_tag(services(compose)["db"]["image"])
    assert int(tag.split(".")[0]) == images.POSTGRES_MAJOR
    assert image_tag(services(compose)["db-password"]["image"]) == tag, "one image, one pull"


def test_lb_runs_the_caddy_image_of_lb01(compose):
    image = services(compose)["lb"]["image"]
    assert image == images.CADDY_IMAGE
    assert version(VERSION_TAG.match(image_tag(image))["version"]) >= version(
        MINIMUM_CADDY_VERSION)


def test_the_log_stack_runs_the_images_of_log01_and_the_app_hosts(compose):
    assert services(compose)["elasticsearch"]["image"] == images.ELASTICSEARCH_IMAGE
    assert services(compose)["kibana"]["image"] == images.KIBANA_IMAGE
    assert services(compose)["filebeat"]["image"] == images.FILEBEAT_IMAGE
    assert images.ELASTIC_VERSION.startswith("8.")


def test_lb_config_is_the_output_of_lb01s_generator(compose):
    """dev/caddy.json is LB-01's config for one upstream, the Compose `app` service."""
    expected = caddy_config([f"app:{APP_PORT}"], domain=None, health_port=HEALTH_AGENT_PORT,
                            admin_listen="localhost:2019")
    assert json.loads(CADDY_JSON.read_text(encoding="utf-8")) == expected, (
        "dev/caddy.json is stale; run `python dev/render_caddy_config.py`")
    check = subprocess.run([sys.executable, str(REPO_ROOT / "dev" / "render_caddy_config.py"),
                            "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr

    lb = services(compose)["lb"]
    mounted = {target: source for source, target, _ in volume_mounts(lb)}
    config_path = lb["command"][lb["command"].index("--config") + 1]
    assert mounted[config_path] == "./dev/caddy.json"


def test_the_health_agent_answers_caddys_probes_from_the_apps_network(compose):
    agent = services(compose)["health-agent"]
    # Sharing the app's network namespace is what makes `app:5001` reach the agent and lets
    # the agent ask the app at 127.0.0.1, exactly as on an APP host.
    assert agent["network_mode"] == "service:app"
    command = agent["command"]
    assert command[command.index("--port") + 1] == str(HEALTH_AGENT_PORT)
    assert command[command.index("--app-health-url") + 1] == (
        f"http://127.0.0.1:{APP_PORT}/health")
    mounts = {target: source for source, target, _ in volume_mounts(agent)}
    assert mounts[command[1]] == "./provisioning/files/health_agent.py"
    active = caddy_config(["app:5000"])["apps"]["http"]["servers"]["app"]["routes"][0][
        "handle"][0]["health_checks"]["active"]
    assert active["port"] == HEALTH_AGENT_PORT


def test_the_app_gets_every_setting_the_reference_app_requires(compose):
    source = (REPO_ROOT / "app" / "server.py").read_text(encoding="utf-8")
    required = re.search(r"for name in \(([^)]*)\) if not env\.get\(name\)", source)
    assert required, "app/server.py no longer lists its required variables the same way"
    names = set(re.findall(r'"(\w+)"', required[1]))
    app = services(compose)["app"]
    given = environment(app)
    assert names and names <= set(given)
    assert given["DB_HOST"] == "db" and given["DB_PORT"] == str(POSTGRES_PORT)
    db = environment(services(compose)["db"])
    assert (given["DB_NAME"], given["DB_USER"]) == (db["POSTGRES_DB"], db["POSTGRES_USER"])
    # The image's own command, kept when the entrypoint wraps it.
    dockerfile = (REPO_ROOT / "app" / "Dockerfile").read_text(encoding="utf-8")
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd and json.loads(cmd[1]) == app["command"]


def test_local_caddy_config_is_accepted_by_caddy(tmp_path):
    caddy = tools.caddy()
    config = json.loads(CADDY_JSON.read_text(encoding="utf-8"))
    path = tmp_path / "caddy.json"
    path.write_text(json.dumps(config))
    result = subprocess.run([caddy, "validate", "--config", str(path)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_filebeat_ships_the_app_and_lb_logs_of_this_project(compose):
    filebeat = services(compose)["filebeat"]
    mounts = {target: (source, mode) for source, target, mode in volume_mounts(filebeat)}
    config_path = filebeat["command"][filebeat["command"].index("-c") + 1]
    assert mounts[config_path] == ("./dev/filebeat.yml", "ro")
    assert all(mode == "ro" for _, mode in mounts.values()), "Filebeat only reads"
    config = yaml.safe_load((REPO_ROOT / "dev" / "filebeat.yml").read_text())
    template = config["filebeat.autodiscover"]["providers"][0]["templates"][0]
    text = json.dumps(template["condition"])
    assert compose["name"] in text and '"app"' in text and '"lb"' in text
    assert config["output.elasticsearch"]["hosts"] == ["http://elasticsearch:9200"]
    # Read and decoded the way the APP hosts do it, so the fields in Kibana have the same names.
    (local,) = template["config"]
    production = filebeat_config(load_environment("production"), "APP-1")
    (remote,) = production["filebeat.inputs"]
    assert local["type"] == remote["type"] and local["parsers"] == remote["parsers"]
    decode = [p["decode_json_fields"] for p in production["processors"]
              if "decode_json_fields" in p]
    assert [p["decode_json_fields"] for p in local["processors"]
            if "decode_json_fields" in p] == decode


def test_compose_file_is_plain_yaml_without_anchors():
    # Anchors and merge keys hide settings from a reader and from the assertions above.
    events = list(yaml.parse(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert not any(isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None)
                   for event in events)


@pytest.mark.parametrize("path", [COMPOSE_FILE, REPO_ROOT / "dev" / "filebeat.yml",
                                  DEV_DOCKERFILE, CADDY_JSON])
def test_committed_local_stack_files_name_no_machine_path(path: Path):
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"/(home|Users|tmp/ck|work/main)/", text)
