"""The shop on disk: the catalog file and the event files, with ingestion noise (broken lines,
producer retries), each written atomically into a landing folder that must not hold them yet."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recspark.core.contract import EVENT_TYPES, REQUIRED_FIELDS
from recspark.datasets.shop.events import Events, event_id_width, simulate
from recspark.datasets.shop.spec import DAY, ShopSpec, id_width, item_ids, start_epoch, user_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShopSummary:
    """What ``write_shop`` wrote, so callers and tests can check it without re-reading files."""

    users: int
    items: int
    events: int
    duplicates: int
    bad_lines: int
    files: int
    first_event_time: datetime
    last_event_time: datetime


def _iso(seconds: np.ndarray, epoch: int) -> list[str]:
    """Format epoch offsets as ISO-8601 UTC strings with a Z suffix (second precision)."""
    stamps = (np.int64(epoch) + seconds.astype(np.int64)).astype("datetime64[s]")
    return [f"{s}Z" for s in np.datetime_as_string(stamps, unit="s").tolist()]


def write_atomically(path: Path, text: str) -> None:
    """Write to a hidden temp file in the same directory, then rename over the target.

    A directory watcher (Spark ignores dot-files) therefore never sees a half-written file.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _event_lines(spec: ShopSpec, ev: Events, width: int) -> list[str]:
    """Serialise valid events to compact JSON lines (ids and enums need no escaping)."""
    n = ev.seconds.size
    sess_width = id_width(int(ev.session.max()) + 1 if n else 1, 8)
    users = user_ids(spec)[ev.user].tolist()
    items = item_ids(spec)[ev.item].tolist()
    kinds = np.array(EVENT_TYPES, dtype=object)[ev.kind].tolist()
    times = _iso(ev.seconds, start_epoch(spec))
    has_value = ~np.isnan(ev.value)
    values = np.full(n, "", dtype=object)
    values[has_value] = [f',"value":{int(v)}' for v in ev.value[has_value].tolist()]
    return [
        f'{{"event_id":"e{k:0{width}d}","event_time":"{t}","user_id":"{u}","item_id":"{i}",'
        f'"event_type":"{et}"{v},"session_id":"s{s:0{sess_width}d}"}}'
        for k, t, u, i, et, v, s in zip(
            range(n),
            times,
            users,
            items,
            kinds,
            values.tolist(),
            ev.session.tolist(),
            strict=True,
        )
    ]


def _bad_line(record: dict[str, object], kind: int, cut: float, field: int) -> str:
    """Break one event record in one of six ways that violate the data contract."""
    rec = dict(record)
    if kind == 1:  # a required field is missing
        del rec[REQUIRED_FIELDS[field]]
    elif kind == 2:  # unknown event type
        rec["event_type"] = "click"
    elif kind == 3:  # unparsable time
        rec["event_time"] = "yesterday"
    elif kind == 4:  # rating out of range
        rec["event_type"], rec["value"] = "rating", 7
        rec["session_id"] = rec.pop("session_id")  # keep the usual key order
    elif kind == 5:  # empty user
        rec["user_id"] = ""
    text = json.dumps(rec, separators=(",", ":"))
    if kind == 0:  # truncated line: any proper prefix of a JSON object is invalid JSON
        text = text[: 1 + int(cut * (len(text) - 2))]
    return text


class LandingNotEmptyError(FileExistsError):
    """Event files of the same names are already in the landing folder."""


def event_file_names(spec: ShopSpec) -> list[str]:
    """``events-YYYYMMDD-NN.jsonl`` for every UTC day and time slice of the window, in order."""
    epoch = start_epoch(spec)
    first_day = epoch // DAY
    last_day = (epoch + spec.days * DAY - 1) // DAY
    return [
        f"events-{datetime.fromtimestamp(int(day) * DAY, tz=timezone.utc):%Y%m%d}-{slot:02d}.jsonl"
        for day in range(first_day, last_day + 1)
        for slot in range(spec.files_per_day)
    ]


def _refuse_existing(events_dir: Path, names: list[str]) -> None:
    """Spark's file source tracks files by path: a replaced file that was already ingested is
    never read again, so its new content would be silently lost."""
    existing = [name for name in names if (events_dir / name).exists()]
    if existing:
        raise LandingNotEmptyError(
            f"{len(existing)} of the {len(names)} event files to write already exist in {events_dir} "
            f"(first: {existing[0]}); ingestion never re-reads a replaced file, so pick an empty folder "
            f"(ingest.path)"
        )


def write_shop(spec: ShopSpec, events_dir: Path, catalog_path: Path) -> ShopSummary:
    """Write the catalog and the event files (with ingestion noise) atomically; summarise them.

    Files are ``events-YYYYMMDD-NN.jsonl`` per UTC day and time slice, in time order. Noise:
    ``bad_fraction`` broken lines and ``duplicate_fraction`` verbatim re-emissions (producer
    retries), half in the same file after the original, half in one of the next three files.
    Refuses (:class:`LandingNotEmptyError`, before writing anything) when an event file of the same
    name exists; the catalog is replaced, since it is re-read whole.
    """
    names = event_file_names(spec)
    _refuse_existing(Path(events_dir), names)
    rng = np.random.default_rng(spec.seed)
    catalog, ev = simulate(spec, rng)
    n = ev.seconds.size
    epoch = start_epoch(spec)
    fpd = spec.files_per_day

    events_dir = Path(events_dir)
    catalog_path = Path(catalog_path)
    events_dir.mkdir(parents=True, exist_ok=True)
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    cat_out = catalog.assign(updated_at=catalog["updated_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    write_atomically(
        catalog_path,
        "".join(
            json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n"
            for rec in cat_out.to_dict(orient="records")
        ),
    )
    logger.info("generate: wrote catalog %s", catalog_path)

    # File slots: UTC calendar day x equal time slices of the day.
    abs_sec = ev.seconds + epoch
    first_day = epoch // DAY
    last_day = (epoch + spec.days * DAY - 1) // DAY
    n_files = int(last_day - first_day + 1) * fpd
    file_of = (abs_sec // DAY - first_day) * fpd + (abs_sec % DAY) * fpd // DAY
    lo = np.searchsorted(file_of, np.arange(n_files), side="left")
    hi = np.searchsorted(file_of, np.arange(n_files), side="right")

    n_dup = round(spec.duplicate_fraction * n)
    n_bad = round(spec.bad_fraction * n)
    width = event_id_width(n)
    lines = _event_lines(spec, ev, width)

    # Duplicates: retries land after the original in the same file or in one of the next files.
    src = np.sort(rng.choice(n, size=n_dup, replace=False)) if n_dup else np.empty(0, np.int64)
    later = rng.random(n_dup) < 0.5
    dup_file = np.minimum(file_of[src] + later * rng.integers(1, 4, n_dup), n_files - 1)
    same = dup_file == file_of[src]
    u = rng.random(n_dup)
    dup_pos = np.where(
        same,
        src + u * (hi[dup_file] - src),
        lo[dup_file] + u * (hi[dup_file] - lo[dup_file]),
    )

    # Broken lines: built from a real event's neighbourhood, placed near it.
    tmpl = rng.integers(0, n, n_bad)
    bad_kind = rng.integers(0, 6, n_bad)
    bad_cut = rng.random(n_bad)
    bad_field = rng.integers(0, len(REQUIRED_FIELDS), n_bad)
    bad_file = file_of[tmpl]
    bad_pos = lo[bad_file] + rng.random(n_bad) * (hi[bad_file] - lo[bad_file])
    bad_lines = []
    for j, (t, k, c, f) in enumerate(
        zip(tmpl.tolist(), bad_kind.tolist(), bad_cut.tolist(), bad_field.tolist(), strict=True)
    ):
        rec = json.loads(lines[t])
        rec["event_id"] = f"e{n + j:0{width}d}"
        bad_lines.append(_bad_line(rec, k, c, f))

    all_lines = lines + [lines[s] for s in src.tolist()] + bad_lines
    files = np.concatenate([file_of, dup_file, bad_file])
    pos = np.concatenate([np.arange(n, dtype=np.float64), dup_pos, bad_pos])
    tie = np.concatenate([np.zeros(n), np.ones(n_dup), np.full(n_bad, 2.0)])
    order = np.lexsort((tie, pos, files))
    cuts = np.searchsorted(files[order], np.arange(n_files + 1))
    logger.info("generate: %d duplicates and %d bad lines added", n_dup, n_bad)

    assert len(names) == n_files
    for f, name in enumerate(names):
        chunk = order[cuts[f] : cuts[f + 1]].tolist()
        write_atomically(events_dir / name, "".join(all_lines[i] + "\n" for i in chunk))
    logger.info("generate: wrote %d event files to %s", n_files, events_dir)

    return ShopSummary(
        users=int(np.unique(ev.user).size),
        items=spec.items,
        events=n,
        duplicates=n_dup,
        bad_lines=n_bad,
        files=n_files,
        first_event_time=datetime.fromtimestamp(int(abs_sec[0]), tz=timezone.utc),
        last_event_time=datetime.fromtimestamp(int(abs_sec[-1]), tz=timezone.utc),
    )
