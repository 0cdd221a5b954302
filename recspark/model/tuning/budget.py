"""Tuning's hard time budget: a step starts only when its estimated cost fits in what is left.

A step (one trial's fit and scoring) is made of parts of known kinds, each with an amount of
work (iterations x rank², items³, ...). A kind's cost per unit of work is the slowest rate
measured for it so far, so estimates err long; before the first measurement, the caller's
prior (a cost model from the data's size) stands in. So no step starts that the budget cannot
finish, as far as the steps before it tell.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cost:
    """One part of a step: its kind, its work, and seconds per unit of work before any part of
    that kind was measured."""

    kind: str
    work: float
    prior: float


@dataclass
class Budget:
    seconds: float
    clock: Callable[[], float] = time.monotonic
    rates: dict[str, float] = field(default_factory=dict)  # kind -> slowest seconds per unit seen
    skipped: list[str] = field(default_factory=list)  # steps not started, with their estimate
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def estimate(self, parts: Sequence[Cost]) -> float:
        return sum(part.work * self.rates.get(part.kind, part.prior) for part in parts)

    def allows(self, label: str, parts: Sequence[Cost]) -> bool:
        """Whether a step of ``parts`` can finish within what is left; logs and records it if not."""
        cost, left = self.estimate(parts), self.left()
        if cost <= left:
            return True
        self.skipped.append(f"{label} (estimated {cost:.1f}s, {max(left, 0.0):.1f}s left)")
        log.info("tune: budget: not starting %s: estimated %.1fs, %.1fs left", label, cost, max(left, 0.0))
        return False

    @contextmanager
    def measuring(self, kind: str, work: float) -> Iterator[None]:
        """Time one part of ``kind`` and keep its rate if it is the slowest seen."""
        begun = self.clock()
        yield
        rate = (self.clock() - begun) / max(work, 1e-12)
        self.rates[kind] = max(self.rates.get(kind, 0.0), rate)
