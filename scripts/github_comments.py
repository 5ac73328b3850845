"""Keep one marked comment per stack on a pull request, through the GitHub REST API.

A comment "belongs" to a stack when its body starts with that stack's hidden marker and it
was written by the workflow's own identity (``github-actions[bot]`` for ``GITHUB_TOKEN``).
Both conditions matter: anyone can paste a marker into a comment of their own, and the
workflow must neither overwrite nor be confused by it.

Only the standard library is used, so the workflow needs nothing installed to post.
"""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

API_VERSION = "2022-11-28"
PAGE_SIZE = 100
# Only reads and PATCH are retried: a POST whose answer was lost may have created a comment,
# and posting it again would leave a duplicate.
RETRIED_METHODS = {"GET", "PATCH"}
RETRIED_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_WAIT_SECONDS = 60.0
LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


class GitHubError(Exception):
    """A request to the GitHub API failed; the message names the request and the reason."""


class GitHubConfigError(Exception):
    """The environment lacks what is needed to reach the API (token, repository, PR)."""


@dataclass
class GitHubClient:
    """The few REST calls the plan comment needs."""

    api_url: str
    token: str
    repository: str
    timeout: float = 30.0
    attempts: int = 3
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "GitHubClient":
        token = environ.get("GITHUB_TOKEN") or environ.get("GH_TOKEN")
        if not token:
            raise GitHubConfigError("GITHUB_TOKEN is not set; the workflow must pass it in env")
        repository = environ.get("GITHUB_REPOSITORY", "")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
            raise GitHubConfigError(
                f"GITHUB_REPOSITORY must be owner/name, got {repository!r}")
        api_url = environ.get("GITHUB_API_URL", "https://api.github.com")
        return cls(api_url=api_url.rstrip("/"), token=token, repository=repository)

    # -- transport

    def request(self, method: str, url: str, payload: Any = None) -> tuple[Any, Mapping]:
        """Send one request; return the decoded JSON body and the response headers."""
        if not url.startswith(self.api_url + "/"):
            # Pagination URLs come from response headers: never send the token elsewhere.
            raise GitHubError(f"refusing to send the token to {url}: not under {self.api_url}")
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.token}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "plan-comment",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        shown = url[len(self.api_url):].split("?")[0]
        attempts = self.attempts if method in RETRIED_METHODS else 1
        for attempt in range(1, attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                    return (json.loads(raw) if raw else None), response.headers
            except urllib.error.HTTPError as error:
                detail = _error_detail(error)
                retry = error.code in RETRIED_STATUSES or _is_rate_limited(error)
                if not retry or attempt == attempts:
                    raise GitHubError(
                        f"GitHub API {method} {shown} failed: HTTP {error.code}: {detail}"
                    ) from None
                self.sleep(_retry_wait(error, attempt))
            except (urllib.error.URLError, TimeoutError, OSError) as error:
                reason = getattr(error, "reason", error)
                if attempt == attempts:
                    raise GitHubError(f"GitHub API {method} {shown} failed: {reason}") from None
                self.sleep(float(2 ** (attempt - 1)))
            except ValueError as error:
                raise GitHubError(
                    f"GitHub API {method} {shown} returned invalid JSON: {error}") from None
        raise AssertionError("unreachable")

    # -- issue comments (pull requests are issues for comments)

    def _repo_url(self, path: str) -> str:
        owner, name = self.repository.split("/")
        return (f"{self.api_url}/repos/{urllib.parse.quote(owner)}/"
                f"{urllib.parse.quote(name)}{path}")

    def iter_issue_comments(self, number: int) -> Iterator[dict]:
        url: str | None = self._repo_url(f"/issues/{int(number)}/comments?per_page={PAGE_SIZE}")
        while url:
            page, headers = self.request("GET", url)
            if not isinstance(page, list):
                raise GitHubError(f"GitHub API returned {type(page).__name__} for a comment list")
            yield from page
            match = LINK_NEXT.search(headers.get("Link", "") or "")
            url = match.group(1) if match else None

    def create_issue_comment(self, number: int, body: str) -> dict:
        comment, _ = self.request("POST", self._repo_url(f"/issues/{int(number)}/comments"),
                                  {"body": body})
        return comment

    def update_issue_comment(self, comment_id: int, body: str) -> dict:
        comment, _ = self.request("PATCH", self._repo_url(f"/issues/comments/{int(comment_id)}"),
                                  {"body": body})
        return comment


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read() or b"{}")
        return str(body.get("message") or error.reason)
    except (ValueError, AttributeError, OSError):
        return str(error.reason)


def _is_rate_limited(error: urllib.error.HTTPError) -> bool:
    headers = error.headers or {}
    return error.code == 403 and (headers.get("Retry-After") is not None
                                  or headers.get("X-RateLimit-Remaining") == "0")


def _retry_wait(error: urllib.error.HTTPError, attempt: int) -> float:
    headers = error.headers or {}
    try:
        wait = float(headers.get("Retry-After", ""))
    except ValueError:
        wait = float(2 ** (attempt - 1))
    return min(max(wait, 0.0), MAX_RETRY_WAIT_SECONDS)


def find_marked_comment(comments: Iterator[dict] | list[dict], marker: str,
                        author: str | None) -> dict | None:
    """The oldest comment whose body starts with ``marker``, written by ``author``.

    The oldest wins so that the comment stays where reviewers first saw it, even if a race
    ever produced a duplicate.
    """
    for comment in comments:
        body = comment.get("body") or ""
        login = (comment.get("user") or {}).get("login")
        if body.startswith(marker) and (author is None or login == author):
            return comment
    return None


def upsert_marked_comment(client: GitHubClient, number: int, marker: str, body: str,
                          author: str | None) -> tuple[str, dict]:
    """Update the stack's comment in place, or create it; return ("updated"|"created", it)."""
    if not body.startswith(marker):
        raise ValueError("the comment body must start with its marker")
    existing = find_marked_comment(client.iter_issue_comments(number), marker, author)
    if existing is None:
        return "created", client.create_issue_comment(number, body)
    if existing.get("body") == body:
        return "unchanged", existing
    return "updated", client.update_issue_comment(existing["id"], body)


def pull_request_number(environ: Mapping[str, str]) -> int:
    """The pull request number of the event that started the workflow."""
    path = environ.get("GITHUB_EVENT_PATH")
    if not path:
        raise GitHubConfigError("GITHUB_EVENT_PATH is not set; pass --pr-number")
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
        number = event["pull_request"]["number"]
    except (OSError, ValueError, KeyError, TypeError):
        raise GitHubConfigError(
            f"{path} is not a pull_request event; pass --pr-number") from None
    if not isinstance(number, int) or number <= 0:
        raise GitHubConfigError(f"invalid pull request number in {path}: {number!r}")
    return number
