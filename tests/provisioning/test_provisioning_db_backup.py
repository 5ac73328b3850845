"""db-backup and db-setup against a real PostgreSQL server started by the test session.

The scripts are run exactly as DB-01 has them, with only paths and commands pointed at the
test server through their documented environment variables (no NFS mount: NFS_SOURCE empty).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.provisioning.conftest import fake_command, run_script

pytestmark = pytest.mark.e2e

BACKUP_NAME = re.compile(r"^(?P<db>.+)-(?P<stamp>\d{8}T\d{6}Z)\.dump$")


def stamp(days_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture
def database(postgres_server):
    """A fresh database with rows in two tables; its name."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    postgres_server.psql("""
        CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL,
                               created_at timestamptz NOT NULL DEFAULT now());
        INSERT INTO messages (body)
             SELECT 'message ' || n || ' ' || repeat('é', n % 7) FROM generate_series(1, 500) n;
        CREATE TABLE settings (key text PRIMARY KEY, value jsonb);
        INSERT INTO settings VALUES ('theme', '{"dark": true}'), ('limit', '42');
    """, database=name)
    return name


def fingerprint(server, database: str) -> tuple:
    """Every row of both tables, as one comparable value."""
    return (server.psql("SELECT count(*), md5(string_agg(id || ':' || body || ':' || "
                        "created_at, ',' ORDER BY id)) FROM messages", database),
            server.psql("SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM settings",
                        database))


@pytest.fixture
def backup_env(postgres_server, tmp_path, database) -> dict:
    backups = tmp_path / "backups"
    backups.mkdir()
    return {**postgres_server.env, "DB_BACKUP_CONFIG": str(tmp_path / "absent.env"),
            "DB_NAME": database, "DB_OS_USER": "", "NFS_SOURCE": "",
            "BACKUP_DIR": str(backups), "RETENTION_DAYS": "14"}


def backup_files(env: dict) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in Path(env["BACKUP_DIR"]).iterdir()}


def as_database_os_user():
    """DB-01 runs the tools as the postgres OS user through runuser; so can a root test."""
    users = [pytest.param("", id="as-caller")]
    if os.geteuid() == 0 and shutil.which("runuser"):
        users.append(pytest.param("postgres", id="through-runuser"))
    return users


@pytest.mark.parametrize("os_user", as_database_os_user())
def test_backup_then_restore_brings_every_row_back(postgres_server, database, backup_env,
                                                   os_user):
    backup_env["DB_OS_USER"] = os_user
    before = fingerprint(postgres_server, database)
    assert before[0].startswith("500|")

    created = run_script("db-backup.sh", "dump", env=backup_env, check=True)

    (name,) = backup_files(backup_env)
    match = BACKUP_NAME.match(name)
    assert match and match["db"] == database, name
    assert f"wrote {backup_env['BACKUP_DIR']}/{name}" in created.stdout

    postgres_server.psql("DELETE FROM messages WHERE id % 3 = 0; "
                         "UPDATE messages SET body = 'overwritten' WHERE id < 50; "
                         "INSERT INTO messages (body) VALUES ('written after the backup'); "
                         "DROP TABLE settings;", database=database)
    assert postgres_server.psql("SELECT count(*) FROM messages", database) == "335"
    assert postgres_server.psql("SELECT to_regclass('settings') IS NULL", database) == "t"

    restored = run_script("db-backup.sh", "dump-restore", "latest", env=backup_env, check=True)

    assert f"restored {database} from" in restored.stdout
    assert fingerprint(postgres_server, database) == before


def test_restore_of_a_named_backup_after_every_row_is_gone(postgres_server, database,
                                                           backup_env):
    before = fingerprint(postgres_server, database)
    run_script("db-backup.sh", "dump", env=backup_env, check=True)
    (name,) = backup_files(backup_env)
    postgres_server.psql("TRUNCATE messages; TRUNCATE settings;", database=database)

    run_script("db-backup.sh", "dump-restore", name, env=backup_env, check=True)

    assert fingerprint(postgres_server, database) == before


def test_list_shows_backups_oldest_first(backup_env):
    folder = Path(backup_env["BACKUP_DIR"])
    db = backup_env["DB_NAME"]
    # Named once: a second stamp() may fall in the next second.
    names = {days: f"{db}-{stamp(days)}.dump" for days in (3, 1, 2)}
    for days, name in names.items():
        (folder / name).write_bytes(b"x" * days)
    (folder / "unrelated.txt").write_text("not a backup")

    listed = run_script("db-backup.sh", "dumps", env=backup_env, check=True).stdout.splitlines()

    assert [line.split("\t")[0] for line in listed] == sorted(names.values())
    assert listed[0].endswith("3 bytes")


def test_retention_deletes_only_backups_older_than_the_retention(backup_env):
    folder = Path(backup_env["BACKUP_DIR"])
    db = backup_env["DB_NAME"]
    expired = [f"{db}-{stamp(days)}.dump" for days in (40, 15, 14.01)]
    kept = [f"{db}-{stamp(days)}.dump" for days in (13.9, 7, 1)]
    foreign = [f"otherdb-{stamp(40)}.dump", f"{db}-latest.dump", "notes.txt",
               f".{db}-{stamp(40)}.dump.partial-of-someone-else"]
    for name in expired + kept + foreign:
        (folder / name).write_bytes(b"old backup")

    created = run_script("db-backup.sh", "dump", env=backup_env, check=True)

    remaining = set(backup_files(backup_env))
    new = remaining - set(kept) - set(foreign)
    assert len(new) == 1 and BACKUP_NAME.match(new.pop())
    assert remaining >= set(kept) | set(foreign)
    assert not remaining & set(expired)
    for name in expired:
        assert f"deleted {folder / name} (older than 14 days)" in created.stdout


@pytest.mark.parametrize("failure", ["missing database", "dump dies mid-way",
                                     "dump is not an archive"])
def test_a_failed_backup_leaves_no_file_and_keeps_every_older_backup(backup_env, tmp_path,
                                                                     failure):
    folder = Path(backup_env["BACKUP_DIR"])
    db = backup_env["DB_NAME"]
    # Even backups past the retention stay: nothing is deleted after a failure.
    for days in (30, 2, 1):
        (folder / f"{db}-{stamp(days)}.dump").write_bytes(f"backup of {days} days".encode())
    before = backup_files(backup_env)
    env = dict(backup_env)
    if failure == "missing database":
        env["DB_NAME"] = db = f"{db}_missing"
        for name in list(before):
            (folder / name).rename(folder / name.replace(backup_env["DB_NAME"], db, 1))
        before = backup_files(backup_env)
    elif failure == "dump dies mid-way":
        env["PG_DUMP"] = str(fake_command(tmp_path, "pg_dump",
                                          "head -c 100000 /dev/urandom\nexit 1\n"))
    else:
        env["PG_DUMP"] = str(fake_command(tmp_path, "pg_dump", "echo 'not a dump'\n"))

    result = run_script("db-backup.sh", "dump", env=env)

    assert result.returncode != 0
    # The tool's own message, then the script's verdict.
    reason = result.stderr.strip().splitlines()[-1]
    assert reason.startswith("db-backup: error:") and "older backups kept" in reason
    assert backup_files(backup_env) == before


def test_backup_refuses_a_missing_backup_directory(backup_env, tmp_path):
    env = {**backup_env, "BACKUP_DIR": str(tmp_path / "not-mounted")}

    result = run_script("db-backup.sh", "dump", env=env)

    assert result.returncode == 1
    assert "missing or not writable" in result.stderr


def test_a_failed_restore_leaves_the_database_unchanged(postgres_server, database, backup_env,
                                                        tmp_path):
    before = fingerprint(postgres_server, database)
    broken = tmp_path / "broken.dump"
    broken.write_bytes(b"PGDMP but not really")

    result = run_script("db-backup.sh", "dump-restore", str(broken), env=backup_env)

    assert result.returncode == 1
    assert "is not a readable pg_dump archive" in result.stderr
    assert fingerprint(postgres_server, database) == before


def test_restore_without_any_backup_says_so(backup_env):
    result = run_script("db-backup.sh", "dump-restore", "latest", env=backup_env)

    assert result.returncode == 1
    assert f"no backup of {backup_env['DB_NAME']}" in result.stderr


def test_retention_must_be_a_positive_number_of_days(backup_env):
    result = run_script("db-backup.sh", "dump", env={**backup_env, "RETENTION_DAYS": "0"})

    assert result.returncode == 1 and "RETENTION_DAYS" in result.stderr
    assert backup_files(backup_env) == {}


# --- db-setup ----------------------------------------------------------------------------

@pytest.fixture
def setup_env(postgres_server, tmp_path) -> dict:
    """db-setup pointed at the test server, with SSM replaced by a file holding the secret."""
    secret = tmp_path / "secret"
    secret.write_text("first-Password_0123456789")
    calls = tmp_path / "ssm-calls"
    helper = fake_command(tmp_path, "ssm-parameter",
                          f'echo "$*" >> "{calls}"\ncat "{secret}"\n')
    suffix = uuid.uuid4().hex[:8]
    return {**postgres_server.env, "DB_BACKUP_CONFIG": str(tmp_path / "absent.env"),
            "DB_NAME": f"appdb_{suffix}", "DB_USER": f"app_{suffix}", "DB_OS_USER": "",
            "DB_PASSWORD_PARAMETER": "/webapp/test/db/password",
            "SSM_PARAMETER": str(helper), "SECRET_FILE": str(secret), "CALLS": str(calls)}


def connect_as(server, user: str, password: str, database: str) -> subprocess.CompletedProcess:
    env = {**server.env, "PGUSER": user, "PGPASSWORD": password, "PGDATABASE": database}
    return subprocess.run([str(server.bindir / "psql"), "-X", "-A", "-t", "-c",
                           "SELECT current_user, current_database()"],
                          env=env, capture_output=True, text=True)


@pytest.mark.parametrize("os_user", as_database_os_user())
def test_db_setup_creates_the_app_user_and_database_with_the_ssm_password(
        postgres_server, setup_env, os_user):
    result = run_script("db-setup.sh", env={**setup_env, "DB_OS_USER": os_user}, check=True)

    user, db = setup_env["DB_USER"], setup_env["DB_NAME"]
    assert Path(setup_env["CALLS"]).read_text() == "ensure /webapp/test/db/password\n"
    login = connect_as(postgres_server, user, "first-Password_0123456789", db)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == f"{user}|{db}"
    assert postgres_server.psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database "
                                f"WHERE datname = '{db}'") == user
    # Stored as a SCRAM verifier, as pg_hba's scram-sha-256 requires.
    assert postgres_server.psql(f"SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                                f"WHERE rolname = '{user}'") == "t"
    assert connect_as(postgres_server, user, "wrong", db).returncode != 0
    assert "first-Password" not in result.stdout + result.stderr


def test_db_setup_runs_again_and_takes_the_current_password(postgres_server, setup_env):
    run_script("db-setup.sh", env=setup_env, check=True)
    Path(setup_env["SECRET_FILE"]).write_text("second-Password_0123456789")

    run_script("db-setup.sh", env=setup_env, check=True)

    user, db = setup_env["DB_USER"], setup_env["DB_NAME"]
    assert connect_as(postgres_server, user, "second-Password_0123456789", db).returncode == 0
    assert connect_as(postgres_server, user, "first-Password_0123456789", db).returncode != 0


def test_only_the_app_user_may_connect_to_the_app_database(postgres_server, setup_env):
    run_script("db-setup.sh", env=setup_env, check=True)
    stranger = f"stranger_{uuid.uuid4().hex[:6]}"
    postgres_server.create_role(stranger, "stranger-password")

    refused = connect_as(postgres_server, stranger, "stranger-password", setup_env["DB_NAME"])

    assert refused.returncode != 0
    assert "permission denied for database" in refused.stderr


def test_db_setup_keeps_the_password_out_of_the_server_log(postgres_server, setup_env):
    postgres_server.psql("ALTER SYSTEM SET log_statement = 'all'")
    postgres_server.psql("SELECT pg_reload_conf()")
    try:
        run_script("db-setup.sh", env=setup_env, check=True)
    finally:
        postgres_server.psql("ALTER SYSTEM RESET log_statement")
        postgres_server.psql("SELECT pg_reload_conf()")

    log = (postgres_server.root / "server.log").read_text()
    # Statements were being logged, up to the one that switches logging off for the session.
    assert "statement: SET log_statement = 'none'" in log
    assert "first-Password_0123456789" not in log


def test_db_setup_fails_clearly_when_the_password_cannot_be_had(setup_env, tmp_path):
    env = {**setup_env, "SSM_PARAMETER": str(fake_command(tmp_path, "broken-ssm", "exit 3\n"))}

    result = run_script("db-setup.sh", env=env)

    assert result.returncode == 1
    assert "cannot read or create /webapp/test/db/password" in result.stderr
