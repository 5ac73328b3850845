"""A load generator that notices every lost request.

HTTP/1.1 keep-alive clients that never retry, each sending at a steady rate and alternating
GET and POST-with-a-body, checking every answer (status 200, the body echoed back by hash).
A request counts as failed on any error, any other status, or a wrong answer: exactly what a
user of the site would see.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadStats:
    """What the clients saw."""

    sent: int = 0
    failed: int = 0
    connections: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)
    posts: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)
    # When each failed request, and the first answered one, was sent (monotonic seconds).
    failed_sent_at: list[float] = field(default_factory=list)
    first_answered_sent_at: float | None = None

    def failed_since_first_answer(self) -> int:
        """Requests sent after the first one answered that failed: a fresh site's losses."""
        start = self.first_answered_sent_at
        return 0 if start is None else sum(t >= start for t in self.failed_sent_at)

    def versions_after(self, moment: float) -> Counter:
        return Counter(v for t, v in self.timeline if t >= moment)


class LoadGenerator:
    """``clients`` keep-alive connections to ``host:port``, ``rate`` requests/s each."""

    def __init__(self, host: str, port: int, *, clients: int = 8, rate: float = 20.0,
                 body_bytes: tuple[int, int] = (256, 16384), timeout: float = 15.0,
                 seed: int = 1) -> None:
        self.host, self.port = host, port
        self.clients, self.period = clients, 1.0 / rate
        self.body_bytes, self.timeout = body_bytes, timeout
        self.seed = seed
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "LoadGenerator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True,
                                      name=f"load-{n}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> LoadStats:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 1)
        self._threads.clear()
        return self.stats

    def _client(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        conn: http.client.HTTPConnection | None = None
        # Spread the clients over one period so the load is steady, not in bursts.
        next_at = time.monotonic() + self.period * number / self.clients
        sequence = number
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                if self._stop.wait(delay):
                    break
            next_at = max(next_at + self.period, time.monotonic() - self.period)
            sequence += 1
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                with self._lock:
                    self.stats.connections += 1
            post = sequence % 2 == 0
            sent_at = time.monotonic()
            body = os.urandom(rng.randint(*self.body_bytes)) if post else None
            data = b""
            try:
                if post:
                    conn.request("POST", "/echo", body=body,
                                 headers={"Content-Type": "application/octet-stream"})
                else:
                    conn.request("GET", f"/?n={sequence}")
                response = conn.getresponse()
                data = response.read()
                problem = self._check(response.status, data, body)
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{'POST' if post else 'GET'}: {exc.__class__.__name__}: {exc}"
                conn.close()
                conn = None
            self._count(problem, data, post, sent_at)

    def _check(self, status: int, data: bytes, body: bytes | None) -> str | None:
        if status != 200:
            return f"{'POST' if body is not None else 'GET'}: status {status}: {data[:120]!r}"
        try:
            answer = json.loads(data)
        except ValueError:
            return f"not JSON: {data[:120]!r}"
        if body is not None and answer.get("sha256") != hashlib.sha256(body).hexdigest():
            return "POST: body not echoed intact"
        return None

    def _count(self, problem: str | None, data: bytes | None, post: bool,
               sent_at: float) -> None:
        version = json.loads(data).get("version", "?") if problem is None else None
        with self._lock:
            self.stats.sent += 1
            self.stats.posts += int(post)
            if problem:
                self.stats.failed += 1
                self.stats.failed_sent_at.append(sent_at)
                if len(self.stats.failures) < 50:
                    self.stats.failures.append(problem)
            else:
                if (self.stats.first_answered_sent_at is None
                        or sent_at < self.stats.first_answered_sent_at):
                    self.stats.first_answered_sent_at = sent_at
                self.stats.versions[version] += 1
                self.stats.timeline.append((time.monotonic(), version))
