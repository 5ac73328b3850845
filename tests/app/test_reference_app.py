"""The reference application against a real PostgreSQL server, and its image's recipe."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.app.conftest import APP_DIR, require_psycopg
from tests.provisioning.postgres_server import free_port

pytestmark = pytest.mark.e2e


def rows(postgres_server, database: str, sql: str) -> list[list[str]]:
    output = postgres_server.psql(sql, database)
    return [line.split("|") for line in output.splitlines()]


def test_every_answer_carries_the_running_version(app):
    for method, path, body in (("GET", "/", None), ("GET", "/health", None),
                               ("GET", "/messages", None), ("GET", "/nowhere", None),
                               ("POST", "/messages", {"text": "hi"}), ("DELETE", "/", None)):
        status, headers, document = app.request(method, path, body)
        assert headers["X-App-Version"] == "1.4.2", (method, path, status)
        assert document["version"] == "1.4.2", (method, path, status)
        assert headers["Content-Type"] == "application/json"


def test_index_names_the_service_and_the_host(app):
    status, _, document = app.request("GET", "/")

    assert status == 200
    assert document == {"service": "reference-app", "host": socket.gethostname(),
                        "version": "1.4.2"}


def test_health_is_ok_when_the_database_answers(app):
    assert app.request("GET", "/health")[::2] == (200, {"status": "ok", "version": "1.4.2"})


def test_a_posted_message_is_a_row_in_the_database(app, postgres_server, app_database):
    status, _, created = app.request("POST", "/messages", {"text": "héllo, wörld"},
                                     {"Content-Type": "application/json"})

    assert status == 201
    assert created["text"] == "héllo, wörld" and created["host"] == socket.gethostname()
    (row,) = rows(postgres_server, app_database["DB_NAME"],
                  f"SELECT body, version, host FROM messages WHERE id = {created['id']}")
    assert row == ["héllo, wörld", "1.4.2", socket.gethostname()]
    status, _, listed = app.request("GET", "/messages")
    assert status == 200
    assert listed["messages"][0]["id"] == created["id"]
    assert listed["messages"][0]["text"] == "héllo, wörld"


@pytest.mark.parametrize("body, status, error", [
    (b"{not json", 400, "must be JSON"),
    (b'{"message": "wrong field"}', 422, '"text" must be'),
    (json.dumps({"text": ""}).encode(), 422, '"text" must be'),
    (json.dumps({"text": "x" * 1001}).encode(), 422, '"text" must be'),
    (b'["text"]', 422, '"text" must be'),
])
def test_bad_messages_are_refused_and_nothing_is_written(app, postgres_server, app_database,
                                                         body, status, error):
    app.request("POST", "/messages", {"text": "make sure the table exists"})
    before = postgres_server.psql("SELECT count(*) FROM messages", app_database["DB_NAME"])

    answer, _, document = app.request("POST", "/messages", body)

    assert answer == status and error in document["error"]
    assert postgres_server.psql("SELECT count(*) FROM messages",
                                app_database["DB_NAME"]) == before


def test_an_oversized_body_is_refused_without_reading_it(app):
    connection = app.connection()
    connection.putrequest("POST", "/messages")
    connection.putheader("Content-Length", str(10 * 1024 * 1024))
    connection.endheaders()

    response = connection.getresponse()

    assert response.status == 413
    assert response.getheader("Connection") == "close"
    connection.close()


def test_unknown_paths_and_methods(app):
    assert app.request("GET", "/admin")[0] == 404
    status, headers, _ = app.request("PUT", "/messages", {"text": "x"})
    assert status == 405 and headers["Allow"] == "GET, POST"


def test_many_requests_share_one_keep_alive_connection(app):
    connection = app.connection()
    try:
        for number in range(20):
            connection.request("POST", "/messages", body=json.dumps({"text": f"n{number}"}))
            response = connection.getresponse()
            assert response.status == 201
            response.read()
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_health_fails_while_the_database_is_unreachable(start_app):
    app = start_app(DB_PORT=str(free_port()))  # nothing listens there

    status, _, document = app.request("GET", "/health")

    assert status == 503
    assert document["status"] == "unavailable" and document["reason"].startswith("database:")
    assert app.request("GET", "/")[0] == 200  # the process itself still answers
    assert app.request("POST", "/messages", {"text": "lost?"})[0] == 503


def test_a_connection_the_server_dropped_is_replaced_without_a_failed_check(
        app, postgres_server, app_database):
    assert app.request("GET", "/health")[0] == 200
    postgres_server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         f"WHERE usename = '{app_database['DB_USER']}'")

    assert app.request("GET", "/health")[0] == 200


def test_app_hosts_starting_together_create_the_table_once(start_app, postgres_server,
                                                           app_database):
    postgres_server.psql("DROP TABLE IF EXISTS messages", app_database["DB_NAME"])
    apps = [start_app() for _ in range(3)]
    results = []

    def post(app):
        results.append(app.request("POST", "/messages", {"text": "first"})[0])

    threads = [threading.Thread(target=post, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [201, 201, 201]


def test_sigterm_lets_the_request_in_flight_finish(app, postgres_server, app_database):
    psycopg = require_psycopg()
    app.request("POST", "/messages", {"text": "table exists"})
    idle = app.connection()  # a keep-alive connection with nothing to do must not hold it up
    idle.request("GET", "/")
    idle.getresponse().read()
    lock = psycopg.connect(host="127.0.0.1", port=postgres_server.port, user="postgres",
                           dbname=app_database["DB_NAME"])
    lock.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")  # the next write waits
    answers = []
    writer = threading.Thread(target=lambda: answers.append(
        app.request("POST", "/messages", {"text": "in flight during shutdown"})[0]))
    writer.start()
    time.sleep(0.5)

    app.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert app.process.poll() is None  # still finishing the request
    lock.rollback()
    lock.close()
    writer.join(timeout=10)
    code = app.process.wait(timeout=10)  # the one SIGTERM is enough

    assert answers == [201]
    assert code == 0
    assert '"message": "stopped"' in app.process.stdout.read()
    idle.close()


def test_each_request_is_one_json_log_line(app):
    app.request("GET", "/health")
    code, out = app.stop()

    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["message"] == "listening" and lines[0]["version"] == "1.4.2"
    requests = [line for line in lines if line["message"] == "request"]
    # The fixture's "is it up" probe, then this test's request; nothing else.
    assert [r["path"] for r in requests] == ["/", "/health"]
    assert len(lines) == 4 and lines[-1]["message"] == "stopped"
    assert (requests[1]["method"], requests[1]["status"], requests[1]["level"]) == (
        "GET", 200, "info")
    assert requests[1]["duration_ms"] >= 0


def test_the_app_refuses_to_start_without_its_database_settings(app_env):
    env = {k: v for k, v in app_env.items() if k != "DB_HOST"}

    result = subprocess.run([sys.executable, str(APP_DIR / "server.py")], env=env,
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert "missing environment variables: DB_HOST" in result.stderr


# --- the image's recipe --------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (APP_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_base_image_is_pinned_to_a_patch_version():
    (base,) = [value for name, value in dockerfile_instructions() if name == "FROM"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base


def test_the_app_runs_as_a_non_root_user_on_port_5000():
    instructions = dockerfile_instructions()
    (user,) = [value for name, value in instructions if name == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert ("EXPOSE", "5000") in instructions
    assert ("CMD", '["python", "server.py"]') in instructions
    names = [name for name, _ in instructions]
    assert names.index("USER") > max(i for i, n in enumerate(names) if n == "RUN")


def test_the_image_checks_its_own_health_endpoint():
    (check,) = [value for name, value in dockerfile_instructions() if name == "HEALTHCHECK"]
    assert "--interval=" in check and "--timeout=" in check
    assert "http://127.0.0.1:5000/health" in check


def test_dependencies_are_pinned_and_the_tests_run_them():
    psycopg = require_psycopg()
    lines = [line.split("#")[0].strip()
             for line in (APP_DIR / "requirements.txt").read_text().splitlines()]
    pins = dict(line.split("==") for line in lines if line)

    assert set(pins) == {"psycopg", "psycopg-binary"}
    assert pins["psycopg"] == pins["psycopg-binary"] == psycopg.__version__
    assert (APP_DIR / ".dockerignore").read_text().splitlines()[-2:] == [
        "!requirements.txt", "!server.py"]
