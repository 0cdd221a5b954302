"""The shop's event stream: the world and catalog drawn, sessions simulated until the event
budget is met, thinned to it and placed in time; valid distinct events, before ingestion noise."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recspark.core.contract import EVENT_TYPES
from recspark.datasets.shop.catalog import build_catalog
from recspark.datasets.shop.sessions import MEAN_EXTRA_VIEWS, simulate_sessions
from recspark.datasets.shop.spec import DAY, ShopSpec, id_width, item_ids, start_epoch, user_ids
from recspark.datasets.shop.world import build_world

logger = logging.getLogger(__name__)

_OVERSAMPLE = 1.3  # simulate this many more sessions than needed, then thin to the budget


@dataclass
class Events:
    """Valid distinct events as index arrays sorted by time (cheap to format or to frame)."""

    seconds: np.ndarray  # int64 seconds since spec start
    user: np.ndarray  # int64 user index
    item: np.ndarray  # int64 item index
    kind: np.ndarray  # int8 index into EVENT_TYPES
    value: np.ndarray  # float64, NaN when absent
    session: np.ndarray  # int64 session index, numbered by session start


def simulate(spec: ShopSpec, rng: np.random.Generator) -> tuple[pd.DataFrame, Events]:
    """Build the world and its catalog, then simulate sessions until the event budget is met."""
    world = build_world(spec, rng)  # the stream's first draws: world_of(spec) draws it again
    catalog = build_catalog(spec, world, rng)
    logger.info("generate: catalog of %d items in %d categories", spec.items, spec.categories)

    per_session = 1.25 * (1.0 + MEAN_EXTRA_VIEWS)  # rough events per session, corrected below
    factor = _OVERSAMPLE
    while True:
        n_sessions = max(spec.users, math.ceil(factor * spec.events / per_session))
        raw = simulate_sessions(spec, world, n_sessions, rng)
        counts = np.bincount(raw["sess"], minlength=raw["s_user"].size)
        if counts.sum() >= spec.events:
            break
        factor *= 1.2 * spec.events / max(int(counts.sum()), 1)
        logger.info("generate: event budget not reached, resimulating with factor %.2f", factor)

    # Thin sessions at random to hit the budget; every user's first session is always kept.
    key = rng.random(counts.size) - raw["s_first"]
    order = np.argsort(key, kind="stable")
    n_keep = int(np.searchsorted(np.cumsum(counts[order]), spec.events)) + 1
    n_keep = max(n_keep, int(raw["s_first"].sum()))
    keep = np.zeros(counts.size, dtype=bool)
    keep[order[:n_keep]] = True

    # Place kept sessions in absolute time, pulled back if they would run past the window end.
    duration = np.zeros(counts.size, dtype=np.int64)
    np.maximum.at(duration, raw["sess"], raw["t"])
    s_start = np.clip(raw["s_start"], 0, spec.days * DAY - 1 - duration)
    kept_sessions = np.flatnonzero(keep)
    by_start = kept_sessions[np.lexsort((kept_sessions, s_start[kept_sessions]))]
    new_id = np.full(counts.size, -1, dtype=np.int64)
    new_id[by_start] = np.arange(by_start.size)

    mask = keep[raw["sess"]]
    sess = new_id[raw["sess"][mask]]
    seconds = s_start[raw["sess"][mask]] + raw["t"][mask]
    item, kind, value = raw["item"][mask], raw["kind"][mask], raw["value"][mask]
    order = np.lexsort((item, kind, sess, seconds))
    events = Events(
        seconds=seconds[order],
        user=raw["s_user"][by_start][sess[order]],
        item=item[order],
        kind=kind[order],
        value=value[order],
        session=sess[order],
    )
    logger.info(
        "generate: %d events in %d sessions from %d users",
        events.seconds.size,
        by_start.size,
        np.unique(events.user).size,
    )
    return catalog, events


def event_id_width(n: int) -> int:
    return id_width(n, 9)


def generate_events(spec: ShopSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (catalog_df, events_df) of the valid distinct events, before ingestion noise.

    Same data as ``write_shop`` writes (same ids and times), handy for tests and benchmarks that
    want the ground truth without parsing files. ``value`` is NaN where the key is absent.
    """
    catalog, ev = simulate(spec, np.random.default_rng(spec.seed))
    return catalog, _events_frame(spec, ev, ev.seconds.size)


def _events_frame(spec: ShopSpec, ev: Events, n_ids: int) -> pd.DataFrame:
    width = event_id_width(n_ids)
    sess_width = id_width(int(ev.session.max()) + 1 if ev.session.size else 1, 8)
    return pd.DataFrame(
        {
            "event_id": [f"e{k:0{width}d}" for k in range(ev.seconds.size)],
            "event_time": pd.to_datetime(ev.seconds + start_epoch(spec), unit="s", utc=True).as_unit("ns"),
            "user_id": user_ids(spec)[ev.user],
            "item_id": item_ids(spec)[ev.item],
            "event_type": np.array(EVENT_TYPES, dtype=object)[ev.kind],
            "value": ev.value.astype(np.float64),
            "session_id": [f"s{k:0{sess_width}d}" for k in ev.session.tolist()],
        }
    )
