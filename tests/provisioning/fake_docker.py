"""A stand-in for the ``docker`` CLI, for testing app-deploy where there is no Docker engine.

It implements the few commands app-deploy uses, keeps its state in ``$FAKE_DOCKER_STATE``
(a JSON file) and runs each "container" as a real HTTP server on 127.0.0.1, on the host port
of ``--publish``, so app-deploy's health checks go over HTTP as on a host. The image decides
how the app behaves:

    ...:bad-*      answers /health with 500 (a release that fails its health check)
    ...:crash-*    exits at once
    ...:missing-*  cannot be pulled (and is not on the host)

Every command is appended to ``events`` in the state, with whether the drain switch
(``$FAKE_DOCKER_DRAIN_FILE``) existed at that moment.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_DOCKER_STATE"])
DRAIN_FILE = os.environ.get("FAKE_DOCKER_DRAIN_FILE", "")

APP = """
import http.server, sys
port, status = int(sys.argv[1]), int(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(status if self.path == "/health" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def load() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"images": [], "containers": {}, "events": []}


def save(state: dict) -> None:
    STATE.write_text(json.dumps(state, indent=1))


def tag(image: str) -> str:
    return image.rsplit(":", 1)[-1]


def alive(pid: int) -> bool:
    """True while the process runs; a zombie nobody reaps (no init in a container) is gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop_process(container: dict) -> None:
    pid = container.get("pid")
    if pid and container.get("running"):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.02)
    container["running"] = False


def run(state: dict, args: list[str]) -> int:
    name, port, env, image = None, None, {}, None
    options_with_value = {"--name", "--restart", "--publish", "--stop-timeout", "--security-opt",
                          "--env", "--env-file", "--log-driver", "--volume", "--user"}
    position = 0
    while position < len(args):
        option = args[position]
        if option in options_with_value:
            value = args[position + 1]
            position += 2
            if option == "--name":
                name = value
            elif option == "--publish":
                port = int(value.split(":")[0])
            elif option == "--env":
                key, _, val = value.partition("=")
                env[key] = val
            elif option == "--env-file":
                for line in Path(value).read_text().splitlines():
                    key, _, val = line.partition("=")
                    env[key] = val
        elif option.startswith("-"):
            position += 1
        else:
            image = option
            break
    if name in state["containers"]:
        print(f"docker: Conflict. The container name {name} is already in use", file=sys.stderr)
        return 125
    if image not in state["images"]:
        print(f"Unable to find image '{image}' locally", file=sys.stderr)
        return 125
    container = {"image": image, "env": env, "port": port, "running": True, "pid": None}
    if tag(image).startswith("crash"):
        container["running"] = False
    else:
        status = 500 if tag(image).startswith("bad") else 200
        process = subprocess.Popen([sys.executable, "-c", APP, str(port), str(status)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        container["pid"] = process.pid
        # Like a real app, it takes a moment before it answers.
        time.sleep(0.2)
    state["containers"][name] = container
    print(f"{abs(hash(name)):x}")
    return 0


def main(argv: list[str]) -> int:
    # One command at a time, as the Docker daemon serialises its state.
    with open(f"{STATE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return execute(argv)


def execute(argv: list[str]) -> int:
    state = load()
    command, args = argv[0], argv[1:]
    state["events"].append({"command": [command, *args],
                            "drained": bool(DRAIN_FILE) and os.path.exists(DRAIN_FILE)})
    status = 0
    containers = state["containers"]
    if command == "pull":
        image = args[-1]
        if tag(image).startswith("missing"):
            print(f"Error response from daemon: manifest for {image} not found", file=sys.stderr)
            status = 1
        elif image not in state["images"]:
            state["images"].append(image)
    elif command == "image" and args[0] == "inspect":
        status = 0 if args[-1] in state["images"] else 1
    elif command == "inspect":
        container = containers.get(args[-1])
        if container is None:
            print(f"Error: No such object: {args[-1]}", file=sys.stderr)
            status = 1
        elif "--format" in args:
            template = args[args.index("--format") + 1]
            print({"{{.Config.Image}}": container["image"],
                   "{{.State.Running}}": str(container["running"]).lower()}[template])
    elif command == "stop":
        if args[-1] in containers:
            stop_process(containers[args[-1]])
        else:
            status = 1
    elif command == "rm":
        container = containers.pop(args[-1], None)
        if container is None:
            status = 1
        else:
            stop_process(container)
    elif command == "run":
        status = run(state, args)
    elif command == "logs":
        print("app: something went wrong (fake log line)")
    elif command == "images":
        for image in state["images"]:
            print(image)
    elif command == "rmi":
        if any(c["image"] == args[-1] for c in containers.values()):
            status = 1
        elif args[-1] in state["images"]:
            state["images"].remove(args[-1])
        else:
            status = 1
    else:
        print(f"fake docker: unsupported command {command}", file=sys.stderr)
        status = 2
    save(state)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
