"""DB-01's pgBackRest configuration and schedule, read by the real pgBackRest and systemd."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from core.settings import load_environment
from provisioning import pgbackrest, user_data
from tests.provisioning.conftest import written_file
from tests.tools import require_tool


def rendered_config(settings) -> str:
    document = yaml.safe_load(user_data.render(settings, "db", "DB-01"))
    return written_file(document, pgbackrest.CONFIG_PATH)["content"]


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_pgbackrest_knows_every_option_and_reads_the_intended_values(environment, tmp_path):
    settings = load_environment(environment)
    config = tmp_path / "pgbackrest.conf"
    config.write_text(rendered_config(settings))
    tool = require_tool("pgbackrest")

    def current(command: str, option: str) -> str:
        result = subprocess.run([tool, f"--config={config}", "--stanza=main",
                                 "--log-level-console=warn", "help", command, option],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        # An unknown option or section in the file is a warning, not an error: refuse it.
        assert "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr
        return re.search(r"^current: (.+)$", result.stdout, re.M)[1]

    assert current("backup", "repo-retention-full") == str(settings.backups.retention_days)
    # help shows repo1's values only: repo2's are read from the file as written (every name
    # known to pgBackRest, or the WARN check above fails).
    text = config.read_text()
    assert f"repo2-s3-bucket={settings.backup_bucket}\n" in text
    assert "repo2-type=s3\n" in text and "repo2-s3-key-type=auto\n" in text
    assert current("archive-push", "archive-async") == "true"
    assert current("archive-push", "spool-path") == pgbackrest.SPOOL_PATH
    assert current("backup", "repo-path") == f"{user_data.BACKUP_MOUNT}/pgbackrest"


def test_postgresql_archives_through_pgbackrest_every_minute(production):
    conf = user_data.postgresql_conf(production)
    assert "archive_mode = 'on'\n" in conf
    assert "archive_timeout = '60s'\n" in conf
    assert (f"archive_command = 'pgbackrest --config={pgbackrest.CONFIG_PATH} --stanza=main "
            "archive-push %p'\n") in conf


@pytest.mark.parametrize("day, time, check", [("Sun", "03:00", "05:00"),
                                              ("Wed", "23:30", "01:30")])
def test_a_full_backup_on_its_day_a_differential_on_every_other(day, time, check):
    schedule = pgbackrest.schedule(day, time)
    analyze = require_tool("systemd-analyze")
    days = set()
    for name, expression in schedule.items():
        result = subprocess.run([analyze, "calendar", "--iterations=7", expression],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        if name != "check":
            elapses = re.findall(r"(?:Next elapse|Iter\. #\d+): (\w{3}) \S+ (\d\d:\d\d):00 UTC",
                                 result.stdout)
            assert {at for _, at in elapses} == {time}
            days |= {(name, weekday) for weekday, _ in elapses}
    assert {weekday for name, weekday in days if name == "full"} == {day}
    assert {weekday for name, weekday in days if name == "diff"} == set(
        pgbackrest.WEEKDAYS) - {day}
    assert schedule["check"] == f"*-*-* {check}:00 UTC"
