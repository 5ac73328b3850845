"""What a person watching a rollout reads: one line per step, then one table for the run."""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO


class StepLog:
    """Prints one timestamped line per step; safe to call from the per-host threads."""

    def __init__(self, stream: TextIO | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._now = now
        self._lock = threading.Lock()
        self.lines: list[str] = []
        self.name_width = 12

    def host(self, position: int, total: int, name: str, message: str) -> None:
        self._write(f"host {position} of {total}", name, message)

    def fleet(self, message: str) -> None:
        self._write("fleet", "", message)

    def _write(self, where: str, name: str, message: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime(self._now()))
        line = f"{stamp}Z  {where:<13}  {name:<{self.name_width}}  {message}".rstrip()
        with self._lock:
            self.lines.append(line)
            print(line, file=self._stream, flush=True)


@dataclass
class HostRow:
    """One host's line in the final table."""

    host: str
    old_image: str | None = None
    new_image: str | None = None
    result: str = "not started"
    seconds: float = 0.0
    ok: bool = True


@dataclass
class RolloutReport:
    """The outcome of one run: a verdict and every host's final state."""

    environment: str
    image: str | None
    rows: list[HostRow] = field(default_factory=list)
    ok: bool = True
    summary: str = ""
    dry_run: bool = False

    def title(self) -> str:
        target = f" to {self.image}" if self.image else " (upstream sync)"
        mode = "dry run" if self.dry_run else ("succeeded" if self.ok else "FAILED")
        return f"Rolling update of {self.environment}{target}: {mode}"

    def _cells(self) -> list[list[str]]:
        return [[row.host, row.old_image or "-", row.new_image or "-", row.result,
                 f"{row.seconds:.1f}"] for row in self.rows]

    def table(self) -> str:
        header = ["host", "old image", "new image", "result", "seconds"]
        cells = self._cells()
        widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]

        def line(values: list[str]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

        out = [self.title(), line(header), line(["-" * w for w in widths])]
        out += [line(r) for r in cells]
        if self.summary:
            out.append(self.summary)
        return "\n".join(out)

    def markdown(self) -> str:
        def esc(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        out = [f"### {esc(self.title())}", ""]
        if self.summary:
            out += [esc(self.summary), ""]
        out += ["| host | old image | new image | result | seconds |",
                "|---|---|---|---|---:|"]
        for host, old, new, result, seconds in self._cells():
            images = [f"`{esc(i)}`" if i != "-" else i for i in (old, new)]
            out.append(f"| {esc(host)} | {images[0]} | {images[1]} | {esc(result)} | {seconds} |")
        return "\n".join(out) + "\n"
