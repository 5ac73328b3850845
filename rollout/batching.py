"""How many hosts leave the load balancer at once."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")

_SIZE = re.compile(r"^\s*(\d+)\s*(%?)\s*$")


@dataclass(frozen=True)
class BatchSize:
    """A batch size as given: a number of hosts, or a percentage of the fleet."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> "BatchSize":
        match = _SIZE.match(str(text))
        if not match:
            raise ValueError(f"expected a number of hosts (e.g. 2) or a percentage of the fleet "
                             f"(e.g. 25%), got {text!r}")
        value, percent = int(match[1]), bool(match[2])
        if value < 1:
            raise ValueError(f"must be at least 1{'%' if percent else ''}, got {text!r}")
        if percent and value > 100:
            raise ValueError(f"a percentage must be 1% to 100%, got {text!r}")
        return cls(value, percent)

    def hosts(self, fleet_size: int) -> int:
        """Hosts per batch for a fleet of ``fleet_size`` (a percentage rounds up, minimum 1)."""
        if self.percent:
            return max(1, math.ceil(fleet_size * self.value / 100))
        return self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True)
class MinHealthy:
    """The fewest hosts that must keep serving while a batch is out: a count or a percentage.

    Unset, it is ``fleet - batch``: a batch may take out only its own hosts, so any other
    host that stops serving pauses the rollout. A flat 90 % would forbid every batch on a
    fleet of fewer than 10 hosts.
    """

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> "MinHealthy":
        match = _SIZE.match(str(text))
        if not match:
            raise ValueError(f"expected a number of hosts (e.g. 3) or a percentage of the fleet "
                             f"(e.g. 75%), got {text!r}")
        value, percent = int(match[1]), bool(match[2])
        if percent and value > 100:
            raise ValueError(f"a percentage must be 0% to 100%, got {text!r}")
        return cls(value, percent)

    def hosts(self, fleet_size: int) -> int:
        """Hosts that must serve in a fleet of ``fleet_size`` (a percentage rounds up)."""
        if self.percent:
            return math.ceil(fleet_size * self.value / 100)
        return self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def make_batches(items: Sequence[T], per_batch: int) -> list[list[T]]:
    """Split ``items`` in order into batches of ``per_batch`` (the last one may be smaller)."""
    if per_batch < 1:
        raise ValueError("per_batch must be >= 1")
    return [list(items[i:i + per_batch]) for i in range(0, len(items), per_batch)]
