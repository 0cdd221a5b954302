"""What a synthetic shop is made of: its size, time window, seed and noise levels, and the ids
and times every part of the generator derives from them."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from recspark.core.config.operations import GenerateConfig

DAY = 86_400  # seconds
_MIN_EVENTS_PER_USER = 5  # spec validation: the event budget must cover the first sessions


@dataclass(frozen=True)
class ShopSpec:
    """Size, time window, seed and noise levels of a synthetic shop; invalid specs fail early."""

    users: int = 2000
    items: int = 500
    categories: int = 20
    events: int = 60_000
    days: int = 30
    seed: int = 7
    start: datetime = datetime(2026, 10, 1, tzinfo=timezone.utc)
    files_per_day: int = 1
    bad_fraction: float = 0.002
    duplicate_fraction: float = 0.01

    @classmethod
    def from_config(cls, generate: GenerateConfig, **overrides: int) -> ShopSpec:
        """The shop the ``generate`` section describes; ``overrides`` (e.g. command-line sizes)
        win over it, so every caller builds the spec the same way."""
        return cls(**{**asdict(generate), **overrides})

    def __post_init__(self) -> None:
        """Reject specs that cannot produce a sensible shop, with a one-line reason."""
        for name in ("users", "items", "categories", "events", "days", "files_per_day"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"ShopSpec.{name} must be a positive integer, got {value!r}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"ShopSpec.seed must be a non-negative integer, got {self.seed!r}")
        if self.items < self.categories:
            raise ValueError(f"ShopSpec.items ({self.items}) must be >= categories ({self.categories})")
        if self.events < _MIN_EVENTS_PER_USER * self.users:
            raise ValueError(
                f"ShopSpec.events ({self.events}) must be >= {_MIN_EVENTS_PER_USER} * users "
                f"({_MIN_EVENTS_PER_USER * self.users}) so every user gets a few events"
            )
        if self.files_per_day > 99:
            raise ValueError(
                f"ShopSpec.files_per_day must be <= 99 (two-digit file suffix), got {self.files_per_day}"
            )
        for name in ("bad_fraction", "duplicate_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"ShopSpec.{name} must be a number, got {value!r}")
            if not 0.0 <= value <= 0.5:
                raise ValueError(f"ShopSpec.{name} must be within [0, 0.5], got {value!r}")
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise ValueError(f"ShopSpec.start must be a timezone-aware datetime, got {self.start!r}")


def start_epoch(spec: ShopSpec) -> int:
    """Whole seconds since the Unix epoch of the window start (sub-second part dropped)."""
    return math.floor(spec.start.timestamp())


def id_width(count: int, minimum: int) -> int:
    """Zero-padding width so ids sort lexicographically and keep a familiar look."""
    return max(minimum, len(str(max(count - 1, 0))))


def user_ids(spec: ShopSpec) -> np.ndarray:
    width = id_width(spec.users, 6)
    return np.array([f"u{k:0{width}d}" for k in range(spec.users)], dtype=object)


def item_ids(spec: ShopSpec) -> np.ndarray:
    width = id_width(spec.items, 5)
    return np.array([f"i{k:0{width}d}" for k in range(spec.items)], dtype=object)
