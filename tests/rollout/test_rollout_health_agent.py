"""The real health agent (provisioning/files/health_agent.py) as a process, against an app
whose health the test controls."""
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rollout.contract import ProbeView

from rollout.lab.fleet import free_port

AGENT = Path(__file__).resolve().parents[2] / "provisioning" / "files" / "health_agent.py"


class FakeApp:
    """An app whose /health answers ``status`` after ``delay`` seconds."""

    def __init__(self):
        self.status, self.delay = 200, 0.0
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                time.sleep(app.delay)
                self.send_response(app.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def get(port, path, method="GET", source="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_agent(*args):
    port = free_port()
    process = subprocess.Popen([sys.executable, str(AGENT), "--listen", "127.0.0.1",
                                "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            get(port, "/agent")
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"agent did not start: {process.communicate()}")
            time.sleep(0.05)


@pytest.fixture
def app():
    fake = FakeApp()
    yield fake
    fake.close()


@pytest.fixture
def agent(app, tmp_path):
    drain = tmp_path / "drain"
    process, port = start_agent("--drain-file", str(drain), "--app-timeout", "0.3",
                                "--app-health-url", f"http://127.0.0.1:{app.port}/health")
    yield port, drain
    process.terminate()
    process.wait(5)


def test_passes_the_apps_health_through(app, agent):
    port, _ = agent
    assert get(port, "/health")[0] == 200
    app.status = 500
    status, body = get(port, "/health")
    assert status == 503 and "app health answered 500" in json.loads(body)["reason"]
    app.status = 302        # a redirect is not health
    assert get(port, "/health")[0] == 503


def test_a_slow_app_is_unhealthy_within_the_agents_timeout(app, agent):
    port, _ = agent
    app.delay = 1.0
    started = time.monotonic()
    status, body = get(port, "/health")
    assert status == 503
    assert time.monotonic() - started < 0.9
    assert "timed out" in json.loads(body)["reason"] or "after more than" in body.decode()


def test_an_app_that_is_down_is_unhealthy(tmp_path):
    process, port = start_agent("--drain-file", str(tmp_path / "drain"),
                                "--app-health-url", f"http://127.0.0.1:{free_port()}/health")
    try:
        status, body = get(port, "/health")
        assert status == 503 and "unreachable" in json.loads(body)["reason"]
    finally:
        process.terminate()
        process.wait(5)


def test_drain_switch_answers_503_whatever_the_app_says(app, agent):
    port, drain = agent
    drain.touch()
    status, body = get(port, "/health")
    assert status == 503 and "draining" in json.loads(body)["reason"]
    drain.unlink()
    assert get(port, "/health")[0] == 200


def test_agent_page_counts_lb_probes_and_not_itself(app, agent):
    port, drain = agent
    view = json.loads(get(port, "/agent")[1])
    assert view == {"drained": False, "probe": {"answer": None, "streak": 0, "age": None},
                    "probes": 0, "probers": {}}
    get(port, "/health")
    get(port, "/health")
    drain.touch()
    get(port, "/health")
    view = json.loads(get(port, "/agent")[1])
    assert view["drained"] is True and view["probes"] == 3
    assert view["probe"]["answer"] == 503 and view["probe"]["streak"] == 1
    assert 0 <= view["probe"]["age"] < 5
    get(port, "/health")
    assert json.loads(get(port, "/agent")[1])["probe"]["streak"] == 2


def test_agent_page_tells_each_load_balancer_apart(app, agent):
    """Two LBs probe the host: each one's streak is its own, so the rollout can see that
    every LB took the host out, not just the one that probed last."""
    port, drain = agent
    get(port, "/health", source="127.0.0.11")
    get(port, "/health", source="127.0.0.12")
    drain.touch()
    get(port, "/health", source="127.0.0.11")
    get(port, "/health", source="127.0.0.11")
    view = ProbeView.parse(get(port, "/agent")[1].decode())
    probers = dict(view.probers)
    assert (probers["127.0.0.11"].answer, probers["127.0.0.11"].streak) == (503, 2)
    assert (probers["127.0.0.12"].answer, probers["127.0.0.12"].streak) == (200, 1)
    both = ("127.0.0.11", "127.0.0.12")
    # All probes together say "out twice in a row"; per LB, LB 12 still sends requests.
    assert view.confirms(503, 2, 5.0)
    assert view.confirms(503, 2, 5.0, both[:1]) and not view.confirms(503, 1, 5.0, both)
    get(port, "/health", source="127.0.0.12")
    view = ProbeView.parse(get(port, "/agent")[1].decode())
    assert view.confirms(503, 1, 5.0, both) and not view.confirms(503, 2, 5.0, both)
    assert view.confirms(503, 1, 5.0, (None, None))
    assert not view.confirms(503, 1, 5.0, (None, None, None))


def test_head_and_unknown_paths(agent):
    port, _ = agent
    assert get(port, "/health", method="HEAD") == (200, b"")
    assert get(port, "/nope")[0] == 404


def test_stops_cleanly_on_sigterm(app, tmp_path):
    process, _ = start_agent("--drain-file", str(tmp_path / "d"),
                             "--app-health-url", f"http://127.0.0.1:{app.port}/health")
    process.send_signal(signal.SIGTERM)
    assert process.wait(5) == 0
    assert "stopped" in process.stderr.read()


@pytest.mark.parametrize("args, message", [
    (["--app-health-url", "https://127.0.0.1/health"], "must be an http:// URL"),
    (["--port", "70000"], "--port must be 1..65535"),
    (["--app-timeout", "0"], "--app-timeout must be a positive"),
])
def test_bad_flags_are_one_line_errors(args, message):
    done = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True,
                          timeout=10)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
