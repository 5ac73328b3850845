"""Finding and updating the marked plan comment, against a fake GitHub API on 127.0.0.1."""
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from pipeline_support import REPO_ROOT, fixture_path

import github_comments
from github_comments import GitHubClient, GitHubError, upsert_marked_comment
from plan_comment import comment_marker

BOT = "github-actions[bot]"
REPOSITORY = "acme/web-platform"
TOKEN = "ghs_test_token"


class FakeGitHub:
    """Just enough of the issue-comments API, with small pages to force pagination."""

    def __init__(self, page_size=2):
        self.page_size = page_size
        self.comments = {}  # pull request number -> list of comments
        self.requests = []
        self.failures = []  # (method, status, message) answered before normal handling
        self.next_id = 1000
        self.extra_link = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def add_comment(self, number, body, login=BOT):
        self.next_id += 1
        comment = {"id": self.next_id, "body": body, "user": {"login": login},
                   "html_url": f"https://github.com/{REPOSITORY}/pull/{number}#c{self.next_id}"}
        self.comments.setdefault(number, []).append(comment)
        return comment

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, payload, headers=()):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                headers = {name.lower(): value for name, value in self.headers.items()}
                fake.requests.append({"method": method, "path": self.path,
                                      "headers": headers, "body": body})
                for failure in list(fake.failures):
                    if failure[0] == method:
                        fake.failures.remove(failure)
                        return self._answer(failure[1], {"message": failure[2]})
                url = urlsplit(self.path)
                prefix = f"/repos/{REPOSITORY}/issues"
                listing = re.fullmatch(prefix + r"/(\d+)/comments", url.path)
                single = re.fullmatch(prefix + r"/comments/(\d+)", url.path)
                if method == "GET" and listing:
                    return self._list(int(listing.group(1)), parse_qs(url.query))
                if method == "POST" and listing:
                    comment = fake.add_comment(int(listing.group(1)), body["body"])
                    return self._answer(201, comment)
                if method == "PATCH" and single:
                    for comments in fake.comments.values():
                        for comment in comments:
                            if comment["id"] == int(single.group(1)):
                                comment["body"] = body["body"]
                                return self._answer(200, comment)
                return self._answer(404, {"message": "Not Found"})

            def _list(self, number, query):
                page = int(query.get("page", ["1"])[0])
                comments = fake.comments.get(number, [])
                start = (page - 1) * fake.page_size
                headers = []
                if start + fake.page_size < len(comments):
                    next_url = (f"{fake.url}/repos/{REPOSITORY}/issues/{number}/comments"
                                f"?per_page=100&page={page + 1}")
                    headers.append(("Link", f'<{fake.extra_link or next_url}>; rel="next"'))
                return self._answer(200, comments[start:start + fake.page_size], headers)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

        return Handler

    def methods(self):
        return [request["method"] for request in self.requests]


@pytest.fixture
def github():
    fake = FakeGitHub()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def client(github):
    return GitHubClient(api_url=github.url, token=TOKEN, repository=REPOSITORY,
                        sleep=lambda seconds: None)


MARKER = comment_marker("staging")


def test_creates_the_comment_when_there_is_none(github, client):
    github.add_comment(7, "Looks good to me", login="reviewer")

    action, comment = upsert_marked_comment(client, 7, MARKER, MARKER + "\nplan A", author=BOT)

    assert action == "created"
    assert github.methods() == ["GET", "POST"]
    assert [c["body"] for c in github.comments[7]] == ["Looks good to me", MARKER + "\nplan A"]
    request = github.requests[-1]
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["x-github-api-version"] == github_comments.API_VERSION


def test_updates_the_stacks_comment_in_place_and_leaves_the_others(github, client):
    production = github.add_comment(7, comment_marker("production") + "\nprod plan")
    staging = github.add_comment(7, MARKER + "\nold plan")

    action, _ = upsert_marked_comment(client, 7, MARKER, MARKER + "\nnew plan", author=BOT)

    assert action == "updated"
    assert github.requests[-1]["method"] == "PATCH"
    assert github.requests[-1]["path"] == f"/repos/{REPOSITORY}/issues/comments/{staging['id']}"
    assert staging["body"] == MARKER + "\nnew plan"
    assert production["body"] == comment_marker("production") + "\nprod plan"
    assert len(github.comments[7]) == 2


def test_finds_the_marked_comment_on_a_later_page(github, client):
    for number in range(5):
        github.add_comment(7, f"comment {number}", login="reviewer")
    marked = github.add_comment(7, MARKER + "\nold")

    upsert_marked_comment(client, 7, MARKER, MARKER + "\nnew", author=BOT)

    assert github.methods() == ["GET", "GET", "GET", "PATCH"]
    assert marked["body"] == MARKER + "\nnew"


def test_a_marker_pasted_by_someone_else_is_neither_used_nor_overwritten(github, client):
    impostor = github.add_comment(7, MARKER + "\nI copied the marker", login="mallory")
    quoting = github.add_comment(7, "the bot said:\n" + MARKER, login=BOT)

    action, _ = upsert_marked_comment(client, 7, MARKER, MARKER + "\nplan", author=BOT)

    assert action == "created"
    assert impostor["body"] == MARKER + "\nI copied the marker"
    assert quoting["body"] == "the bot said:\n" + MARKER
    assert "PATCH" not in github.methods()


def test_the_oldest_of_duplicate_comments_is_the_one_updated(github, client):
    first = github.add_comment(7, MARKER + "\none")
    second = github.add_comment(7, MARKER + "\ntwo")

    upsert_marked_comment(client, 7, MARKER, MARKER + "\nthree", author=BOT)

    assert (first["body"], second["body"]) == (MARKER + "\nthree", MARKER + "\ntwo")


def test_an_identical_body_is_not_written_again(github, client):
    github.add_comment(7, MARKER + "\nsame")

    action, _ = upsert_marked_comment(client, 7, MARKER, MARKER + "\nsame", author=BOT)

    assert action == "unchanged" and github.methods() == ["GET"]


def test_a_body_without_its_marker_is_refused(client):
    with pytest.raises(ValueError):
        upsert_marked_comment(client, 7, MARKER, "no marker", author=BOT)


def test_an_api_error_is_reported_with_the_request_and_githubs_message(github, client):
    github.failures.append(("POST", 403, "Resource not accessible by integration"))

    with pytest.raises(GitHubError) as error:
        upsert_marked_comment(client, 7, MARKER, MARKER + "\nplan", author=BOT)

    assert str(error.value) == (f"GitHub API POST /repos/{REPOSITORY}/issues/7/comments failed:"
                                " HTTP 403: Resource not accessible by integration")


def test_reads_are_retried_on_server_errors_but_a_create_is_not(github, client):
    github.failures.append(("GET", 502, "Bad Gateway"))
    upsert_marked_comment(client, 7, MARKER, MARKER + "\nplan", author=BOT)
    assert github.methods() == ["GET", "GET", "POST"]

    github.failures.append(("POST", 502, "Bad Gateway"))
    with pytest.raises(GitHubError, match="HTTP 502"):
        upsert_marked_comment(client, 8, MARKER, MARKER + "\nplan", author=BOT)
    assert github.methods()[-2:] == ["GET", "POST"]  # one POST: a retry could duplicate it


def test_the_token_is_never_sent_to_a_host_named_in_a_link_header(github, client):
    for number in range(3):
        github.add_comment(7, f"comment {number}", login="reviewer")
    github.extra_link = "https://attacker.example/steal?page=2"

    with pytest.raises(GitHubError, match="refusing to send the token"):
        upsert_marked_comment(client, 7, MARKER, MARKER + "\nplan", author=BOT)
    assert github.methods() == ["GET"]


def test_the_pull_request_number_comes_from_the_event(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42, "head": {"sha": "abc"}}}))
    assert github_comments.pull_request_number({"GITHUB_EVENT_PATH": str(event)}) == 42

    event.write_text(json.dumps({"schedule": "17 5 * * *"}))
    with pytest.raises(github_comments.GitHubConfigError, match="not a pull_request event"):
        github_comments.pull_request_number({"GITHUB_EVENT_PATH": str(event)})


@pytest.mark.parametrize("environ, message", [
    ({"GITHUB_REPOSITORY": REPOSITORY}, "GITHUB_TOKEN is not set"),
    ({"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "no-slash"}, "must be owner/name"),
])
def test_a_missing_token_or_repository_is_a_configuration_error(environ, message):
    with pytest.raises(github_comments.GitHubConfigError, match=message):
        GitHubClient.from_environment(environ)


# --------------------------------------------------------------------------- the command


def run_comment(github, tmp_path, *arguments, token=TOKEN, run_id="123"):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {
        "number": 7, "head": {"sha": "feedface0123456789abcdef0123456789abcdef"}}}))
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(("GITHUB_", "GH_"))}
    environ.update({"GITHUB_API_URL": github.url, "GITHUB_REPOSITORY": REPOSITORY,
                    "GITHUB_EVENT_PATH": str(event), "GITHUB_SERVER_URL": "https://github.com",
                    "GITHUB_RUN_ID": run_id, "GITHUB_RUN_ATTEMPT": "1"})
    if token:
        environ["GITHUB_TOKEN"] = token
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "plan_comment.py"), "comment",
         "--stack", "staging", *arguments], capture_output=True, text=True, env=environ,
        timeout=60)


def test_the_command_posts_once_then_updates_the_same_comment(github, tmp_path):
    plan = ["--plan-json", str(fixture_path("terraform_data_plan.json")),
            "--plan-text", str(fixture_path("terraform_data_plan.txt")),
            "--artifact", "terraform-plan-staging"]

    first = run_comment(github, tmp_path, *plan, run_id="123")
    second = run_comment(github, tmp_path, *plan, run_id="124")

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "created plan comment for staging on pull request #7" in first.stderr
    assert github.methods() == ["GET", "POST", "GET", "PATCH"]
    [comment] = github.comments[7]
    assert comment["body"].startswith(MARKER + "\n")
    assert "**Plan: 2 to add, 1 to change, 2 to destroy.**" in comment["body"]
    assert "commit `feedface0123`" in comment["body"]  # the PR head, not the merge commit
    assert "https://github.com/acme/web-platform/actions/runs/124" in comment["body"]


def test_a_failed_plan_overwrites_the_stale_comment(github, tmp_path):
    stale = github.add_comment(7, MARKER + "\nPlan: 1 to add")

    result = run_comment(github, tmp_path, "--plan-failed")

    assert result.returncode == 0, result.stderr
    assert "plan failed" in stale["body"] and "Plan: 1 to add" not in stale["body"]


def test_the_command_fails_in_one_line_when_github_refuses(github, tmp_path):
    github.failures.append(("POST", 403, "Resource not accessible by integration"))

    result = run_comment(github, tmp_path, "--plan-failed")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "plan_comment.py: error: GitHub API POST /repos/acme/web-platform/issues/7/comments"
        " failed: HTTP 403: Resource not accessible by integration")
    assert "Traceback" not in result.stderr


def test_the_command_without_a_token_exits_2_without_calling_github(github, tmp_path):
    result = run_comment(github, tmp_path, "--plan-failed", token=None)

    assert result.returncode == 2
    assert "GITHUB_TOKEN is not set" in result.stderr and "Traceback" not in result.stderr
    assert github.requests == []
