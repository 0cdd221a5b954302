"""A month in an afternoon: simulated shop days with both streams running, checked every day.

    .venv/bin/python bench/soak.py --days 30

A synthetic shop (``recspark.datasets.shop``: ``--users``, ``--items``, ``--events-per-day``
over ``--history-days`` plus ``--days``) is written into a staging folder; each simulated day
the producer renames that day's files into the landing folder (the README's producer
contract), with the noise a real producer makes: retried events and broken lines inside the
files, a file sent twice, a day's last file landing two days late, and a backlog of several
days landing at once (the first day also lands the shop's history). `recspark ingest` and
`recspark refresh` run throughout as long-running processes on a config under the soak's
folder (lake, landing folder, catalog and MLflow SQLite store there). On schedule: `recspark
train` every night; `recspark maintain` weekly and `recspark forget-user` by day, both while the
streams take in the day's files; a forget-user during a nightly train; a catalog change that
takes the most recommended items out of stock (before a day's files land); one registry outage
(the SQLite store moved away for a nightly train and the next day's refresh batches); and one
SIGKILL of each stream (its whole process group, JVM included), restarted at once.

After every day, once ingest has read every landed line and the refresh has taken in every
change to ``interactions``, the invariants are checked and printed, one line per day:

- ``once``: the ``event_id`` s in ``events`` are exactly the valid distinct ids landed so far
  (``generate_events`` of the same spec is the truth) minus the forgotten users' events, each
  stored once; ``rebuild``: ``interactions`` equals a rebuild from ``events``;
- ``forgotten``: no forgotten user in any table that holds user ids;
- ``lists``: every user with interactions has exactly N rows, ranks 1..N;
- ``available``: no list holds an item the catalog marks unavailable;
- ``champion``: the lists come from the champion; each nightly train's decision matches the
  alias (a retrain with the champion's settings is promoted unless a baseline beats it;
  during the outage the train fails and the champion stays);
- ``streams``: both streams are up (a stream that died is reported and restarted).

It ends with a summary: wall time, per-day time, invariants held per day, batches of each
stream, files per table; ``--json`` writes it all as one object. Exit status 1 if any
invariant failed on any day.

Every registry call opens the SQLite store afresh (``MLFLOW_SQLALCHEMYSTORE_POOLCLASS=
NullPool``), as every call to a remote tracking server is a new request: otherwise a process's
pooled connection would keep reading the moved file and the outage would go unnoticed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recspark.core.config.model import MlflowConfig  # noqa: E402
from recspark.datasets.shop.events import generate_events  # noqa: E402
from recspark.datasets.shop.files import event_file_names, write_shop  # noqa: E402
from recspark.datasets.shop.spec import ShopSpec  # noqa: E402

QUIET_TIMEOUT = 600.0  # seconds for both streams to take in a day
JOB_TIMEOUT = 1200.0  # seconds for one train, maintain or forget-user
EVENT_ID = re.compile(r'"event_id":"(e\d+)"')


# --- the schedule ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Which day (1-based) each planned disturbance happens on, for a soak of ``days`` days.

    Every disturbance happens at least once in a run of three days; a month spreads them out."""

    days: int
    forget_by_day: tuple[int, ...]
    forget_at_night: tuple[int, ...]  # during that night's train
    catalog_change: int
    outage_night: int  # the store is away for this night's train and the next day's batches
    kill: dict[str, int]
    late: tuple[int, ...]  # the day's last file lands two days later (or on the last day)
    backlog: tuple[int, ...]  # days whose files after the first wait for the next landing day
    resend: tuple[int, ...]  # the producer sends yesterday's first file again
    maintain: tuple[int, ...]  # beside the streams, while they take in the day's files

    @classmethod
    def for_days(cls, days: int) -> Schedule:
        if days < 3:
            raise SystemExit("--days must be at least 3 (the outage spans a night and the next day)")
        outage = max(2, round(days * 0.55))
        if outage >= days:
            outage = days - 1
        kill_refresh = max(2, round(days * 0.77))
        if kill_refresh == outage + 1:  # a refresh cannot start while the registry is away
            kill_refresh = outage - 1 if outage > 2 else outage
        # The refresh restarted that day would publish in full anyway: the catalog changes on
        # another day, so its batches alone must take the items out of every list.
        catalog_change = max(2, round(days * 0.4))
        if catalog_change == kill_refresh:
            catalog_change = min(days, catalog_change + 1)
        late_days = (1,) if days < 10 else (5, 20)
        backlog_days = (2,) if days < 10 else (25, 26)
        return cls(
            days=days,
            forget_by_day=tuple(sorted({1, *range(4, days + 1, 7)})),
            forget_at_night=(1,) if days < 10 else (1, 15),
            catalog_change=catalog_change,
            outage_night=outage,
            kill={"ingest": max(2, round(days * 0.3)), "refresh": kill_refresh},
            late=late_days,
            backlog=backlog_days,
            resend=tuple(range(2, days + 1, 5)),
            maintain=tuple(range(7, days + 1, 7)) or (days,),
        )

    def outage_day(self, day: int) -> bool:
        return day == self.outage_night + 1


# --- where everything lives -----------------------------------------------------------------


@dataclass(frozen=True)
class Workdir:
    root: Path

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def landing(self) -> Path:
        return self.root / "incoming" / "events"

    @property
    def catalog(self) -> Path:
        return self.root / "incoming" / "catalog.jsonl"

    @property
    def staging(self) -> Path:
        return self.root / "staging" / "events"

    @property
    def staged_catalog(self) -> Path:
        return self.root / "staging" / "catalog.jsonl"

    @property
    def store(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def settings(self, top_n: int) -> list[str]:
        """The soak's config, on top of conf/local.yaml: its own folder, a small quick train
        (ALS at fixed settings, no tuning), the cluster example's promotion margin."""
        return [
            f"lake.root={self.lake}",
            f"ingest.path={self.landing}",
            f"catalog.path={self.catalog}",
            f"mlflow.tracking_uri=sqlite:///{self.store}",
            f"mlflow.artifact_location={self.root / 'mlartifacts'}",
            "spark.shuffle_partitions=2",
            "spark.driver_memory=1g",
            "spark.conf.spark.ui.enabled=false",
            "ingest.trigger_seconds=2",
            "serve.trigger_seconds=2",
            "train.families=[als]",
            "tune.auto=false",
            "train.rank=8",
            "train.max_iter=5",
            "train.num_user_blocks=2",
            "train.num_item_blocks=2",
            "train.min_train_interactions=50",
            "train.min_test_users=60",
            "mlflow.min_test_users=50",
            "mlflow.promotion_margin=0.01",  # as conf/cluster.yaml ships
            f"serve.top_n={top_n}",
            # A simulated day takes a minute or two: re-rank the shop about twice a day.
            "serve.rankings_refresh_minutes=1",
            "quality.data_docs=false",
        ]


def environment() -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # run as in production
    return {
        **inherited,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "PYSPARK_PYTHON": sys.executable,
        "RECSPARK_ACTOR": "soak",
        "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool",  # see the module docstring
    }


# --- the producer ---------------------------------------------------------------------------


class Producer:
    """Lands the staged shop's files day by day and remembers every line it landed."""

    def __init__(self, work: Workdir, spec: ShopSpec, history_days: int, schedule: Schedule) -> None:
        self.work = work
        self.spec = spec
        self.history = history_days
        self.schedule = schedule
        names = event_file_names(spec)
        per_day = spec.files_per_day
        self.files = [names[d * per_day : (d + 1) * per_day] for d in range(len(names) // per_day)]
        self.held: list[tuple[int, str]] = []  # (landing day, file name)
        self.landed_ids: set[str] = set()
        self.landed_lines = 0
        self.landed_files = 0

    def land_day(self, day: int) -> list[str]:
        """Land day ``day``'s files by the schedule; returns what happened, in words."""
        shop_days = range(self.history + 1) if day == 1 else [self.history + day - 1]
        due = [name for d in shop_days for name in self.files[d]]
        notes = [f"{len(due)} files"] if day > 1 else [f"{self.history} days of history + day 1"]
        today = self.files[self.history + day - 1]
        if day in self.schedule.late:
            late_day = min(day + 2, self.schedule.days)
            if late_day > day:
                due.remove(today[-1])
                self.held.append((late_day, today[-1]))
                notes.append(f"{today[-1]} held until day {late_day}")
        if day in self.schedule.backlog:
            released_on = next(
                d for d in range(day + 1, self.schedule.days + 2) if d not in self.schedule.backlog
            )
            waiting = [name for name in today[1:] if name in due]
            for name in waiting:
                due.remove(name)
                self.held.append((min(released_on, self.schedule.days), name))
            notes.append(f"producer slow: {len(waiting)} files wait for day {released_on}")
        released = [name for when, name in self.held if when == day]
        if released:
            notes.append(f"{len(released)} held files land")
        self.held = [(when, name) for when, name in self.held if when != day]
        for name in [*due, *released]:
            self._land(self.work.staging / name, name)
        if day in self.schedule.resend:
            again = self.files[self.history + day - 2][0]
            copy = self.work.staging / f".{again}.resend"
            shutil.copy(self.work.staging / again, copy)
            self._land(copy, again.replace(".jsonl", "-resent.jsonl"))
            notes.append(f"{again} sent again")
        return notes

    def _land(self, staged: Path, name: str) -> None:
        text = staged.read_text(encoding="utf-8")
        self.landed_ids.update(EVENT_ID.findall(text))
        self.landed_lines += text.count("\n")
        self.landed_files += 1
        target = self.work.landing / name
        if staged.name.startswith("."):
            staged.rename(target)
        else:  # keep the staged file (a resend copies it): link it in under its name
            os.link(staged, self.work.landing / f".{name}.tmp")
            (self.work.landing / f".{name}.tmp").rename(target)


# --- processes ------------------------------------------------------------------------------


class Job:
    """One `recspark` process in a process group of its own (its JVM and Python workers too)."""

    def __init__(self, work: Workdir, settings: list[str], command: list[str], tag: str) -> None:
        self.command = [
            sys.executable,
            "-m",
            "recspark.cli",
            *command,
            "--conf",
            str(ROOT / "conf" / "local.yaml"),
            *(a for s in settings for a in ("--set", s)),
        ]
        self.log = work.logs / f"{tag}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Job:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.time()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float = JOB_TIMEOUT) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        """SIGKILL to the whole group: the JVM dies mid-write, as in a machine crash. Also when
        the group's leader has ended: a JVM it started may still be running."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # the whole group has ended
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """Ctrl-C to the group, then SIGKILL if it has not ended within a minute."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


# --- the checks -----------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.name} {self.detail}"


@dataclass
class Nightly:
    """What a night's train did, as the registry records it."""

    exit_code: int
    version: str | None = None
    status: str | None = None
    reason: str = ""
    champion_before: str | None = None
    champion_after: str | None = None
    expected_failure: bool = False
    seconds: float = 0.0


class Checker:
    """The invariants, read with a Spark session of the soak's own (the checker JVM)."""

    def __init__(self, work: Workdir, settings: list[str], events: pd.DataFrame) -> None:
        from recspark.core.config import load_config
        from recspark.core.session import build_spark
        from recspark.core.tables import Lake

        self.config = load_config(str(ROOT / "conf" / "local.yaml"), settings, environ={})
        self.spark = build_spark(self.config, "soak-check")
        self.lake = Lake.at(self.config.lake.root)
        self.work = work
        self.valid_users = dict(zip(events["event_id"], events["user_id"], strict=True))

    # Waiting for the streams.

    def ingest_read(self) -> int:
        from pyspark.sql import functions as F

        from recspark.core.tables import INGEST_METRICS

        if not self.lake.exists(self.spark, INGEST_METRICS):
            return 0
        row = self.lake.read(self.spark, INGEST_METRICS).agg(F.sum("input_rows")).first()
        return int(row[0] or 0) if row else 0

    def refresh_behind(self) -> bool:
        """Whether ``interactions`` holds changes (new or updated pairs) the serving table does
        not reflect yet (its commits record the interactions version their lists include)."""
        from pyspark.sql import functions as F

        from recspark.core.tables import INTERACTIONS, RECOMMENDATIONS
        from recspark.serve.publish import reflected_version

        if not self.lake.exists(self.spark, RECOMMENDATIONS):
            return True
        reflected = reflected_version(self.spark, self.lake)
        latest = self.lake.version(self.spark, INTERACTIONS)
        if reflected is None:
            return True
        if reflected >= latest:
            return False
        changes = (
            self.spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", reflected + 1)
            .option("endingVersion", latest)
            .load(self.lake.path(INTERACTIONS.name))
            .where(F.col("_change_type").isin("insert", "update_postimage"))
        )
        return not changes.isEmpty()

    def wait_quiet(self, lines: int, streams: dict[str, Job], refresh: bool = True) -> tuple[bool, str]:
        """Wait until ingest has read ``lines`` lines and the refresh has caught up."""
        deadline = time.time() + QUIET_TIMEOUT
        read = 0
        while time.time() < deadline:
            read = self.ingest_read()
            if read == lines and (not refresh or not self.refresh_behind()):
                return True, ""
            if read > lines:
                return False, f"ingest read {read} lines, {lines} landed"
            if not all(job.alive() for job in streams.values()):
                return False, "a stream is down"
            time.sleep(2)
        behind = "ingest" if read < lines else "refresh"
        return False, f"{behind} did not catch up in {QUIET_TIMEOUT:.0f} s ({read} of {lines} lines read)"

    # The invariants.

    def expected_ids(self, landed: set[str], forgotten: set[str]) -> set[str]:
        return {e for e in landed if e in self.valid_users and self.valid_users[e] not in forgotten}

    def exactly_once(self, landed: set[str], forgotten: set[str]) -> Check:
        from pyspark.sql import functions as F

        from recspark.core.tables import EVENTS

        events = self.lake.read(self.spark, EVENTS)
        counted = events.agg(F.count("*"), F.count_distinct("event_id")).first()
        rows, distinct = (counted[0], counted[1]) if counted else (0, 0)
        stored = {r[0] for r in events.select("event_id").collect()}
        expected = self.expected_ids(landed, forgotten)
        missing, extra = len(expected - stored), len(stored - expected)
        ok = rows == distinct and not missing and not extra
        detail = f"{distinct} events" + (
            "" if ok else f" ({rows - distinct} stored twice, {missing} missing, {extra} unexpected)"
        )
        return Check("once", ok, detail)

    def rebuild(self) -> Check:
        from pyspark.sql import functions as F

        from recspark.core.interactions import aggregate_events
        from recspark.core.tables import EVENTS, INTERACTIONS

        def comparable(frame: DataFrame) -> DataFrame:
            columns = [c for c in frame.columns if c not in ("updated_at", "signal", "strength")]
            return frame.select(
                *columns, F.round("signal", 6).alias("signal"), F.round("strength", 6).alias("strength")
            )

        table = comparable(self.lake.read(self.spark, INTERACTIONS))
        rebuilt = comparable(aggregate_events(self.lake.read(self.spark, EVENTS), self.config.interactions))
        only_table = table.exceptAll(rebuilt).count()
        only_rebuilt = rebuilt.exceptAll(table).count()
        ok = only_table == only_rebuilt == 0
        detail = "" if ok else f"({only_table} rows only in the table, {only_rebuilt} only in the rebuild)"
        return Check("rebuild", ok, detail)

    def forgotten(self, users: set[str]) -> Check:
        from pyspark.sql import functions as F

        from recspark.core.tables import (
            ALS_USER_FACTORS,
            EVENTS,
            INTERACTIONS,
            QUARANTINE,
            RECOMMENDATIONS,
            USER_IDS,
        )

        if not users:
            return Check("forgotten", True, "(none yet)")
        found = []
        for spec in (EVENTS, INTERACTIONS, RECOMMENDATIONS, USER_IDS, ALS_USER_FACTORS, QUARANTINE):
            if not self.lake.exists(self.spark, spec):
                continue
            condition = F.col("user_id").isin(*users)
            if spec is QUARANTINE:
                for user in users:
                    condition = condition | F.col("raw").contains(f'"user_id":"{user}"')
            rows = self.lake.read(self.spark, spec).where(condition)
            count = rows.count()
            if count:
                who = sorted({r[0] for r in rows.select("user_id").distinct().collect() if r[0]})
                found.append(f"{spec.name}: {count} rows of {', '.join(who) or 'a user'}")
        return Check(
            "forgotten", not found, f"{len(users)} users" + (f" BACK IN {'; '.join(found)}" if found else "")
        )

    def lists(self, top_n: int) -> Check:
        from pyspark.sql import functions as F

        from recspark.core.tables import INTERACTIONS, RECOMMENDATIONS

        served = self.lake.read(self.spark, RECOMMENDATIONS)
        per_user = served.groupBy("user_id").agg(
            F.count("*").alias("rows"),
            F.count_distinct("rank").alias("ranks"),
            F.min("rank").alias("low"),
            F.max("rank").alias("high"),
        )
        wrong = per_user.where(
            (F.col("rows") != top_n)
            | (F.col("ranks") != top_n)
            | (F.col("low") != 1)
            | (F.col("high") != top_n)
        ).count()
        users = self.lake.read(self.spark, INTERACTIONS).select("user_id").distinct()
        listed = per_user.select("user_id")
        unserved = users.join(listed, "user_id", "left_anti").count()
        strangers = listed.join(users, "user_id", "left_anti").count()
        ok = not (wrong or unserved or strangers)
        detail = f"{per_user.count()} users x {top_n}" + (
            ""
            if ok
            else f" ({wrong} lists not 1..{top_n}, {unserved} users without a list, "
            f"{strangers} lists of users without interactions)"
        )
        return Check("lists", ok, detail)

    def available(self) -> Check:
        from recspark.core.catalog import read_catalog
        from recspark.core.tables import RECOMMENDATIONS
        from recspark.model.candidates.sources import unavailable_items

        unavailable = unavailable_items(read_catalog(self.spark, str(self.work.catalog)))
        served = self.lake.read(self.spark, RECOMMENDATIONS)
        bad = served.join(unavailable, "item_id", "left_semi")
        count = bad.count()
        holders = bad.select("user_id").distinct().count() if count else 0
        detail = f"{unavailable.count()} items out of stock" + (
            f": served {count} times, to {holders} users" if count else ""
        )
        return Check("available", count == 0, detail)

    def served_versions(self) -> set[str | None]:
        from recspark.core.tables import RECOMMENDATIONS

        served = self.lake.read(self.spark, RECOMMENDATIONS)
        return {r[0] for r in served.select("model_version").distinct().collect()}

    def most_listed_items(self, count: int) -> list[str]:
        from pyspark.sql import functions as F

        from recspark.core.tables import RECOMMENDATIONS

        served = self.lake.read(self.spark, RECOMMENDATIONS)
        rows = served.groupBy("item_id").count().orderBy(F.desc("count"), "item_id").limit(count).collect()
        return [r[0] for r in rows]

    def wait_for_lists(self, streams: dict[str, Job]) -> tuple[bool, str]:
        """Wait for the refresh's first batch to publish the serving table's lists (the refresh
        creates the table empty when it starts)."""
        from recspark.core.tables import RECOMMENDATIONS

        deadline = time.time() + QUIET_TIMEOUT
        while time.time() < deadline:
            if (
                self.lake.exists(self.spark, RECOMMENDATIONS)
                and not self.lake.read(self.spark, RECOMMENDATIONS).isEmpty()
            ):
                return True, ""
            if not all(job.alive() for job in streams.values()):
                return False, "a stream is down"
            time.sleep(2)
        return False, f"no serving table after {QUIET_TIMEOUT:.0f} s"

    def listed_users(self) -> set[str]:
        from recspark.core.tables import RECOMMENDATIONS

        return {
            r[0] for r in self.lake.read(self.spark, RECOMMENDATIONS).select("user_id").distinct().collect()
        }

    def batches(self) -> dict[str, int]:
        """Micro-batches each stream has committed (its checkpoint's newest commit + 1)."""
        done = {}
        for stream, query in (("ingest", "ingest_events"), ("refresh", "refresh_recommendations")):
            commits = Path(self.lake.checkpoint(query).removeprefix("file:")) / "commits"
            ids = [int(p.name) for p in commits.glob("*") if p.name.isdigit()] if commits.is_dir() else []
            done[stream] = max(ids) + 1 if ids else 0
        return done

    def files(self) -> dict[str, int]:
        from recspark.core.tables import ALL_TABLES

        counts = {}
        for spec in ALL_TABLES:
            if self.lake.exists(self.spark, spec):
                detail = self.lake.delta(self.spark, spec).detail().first()
                counts[spec.name] = int(detail["numFiles"]) if detail else 0
        return counts

    def stop(self) -> None:
        self.spark.stop()


# --- the registry ---------------------------------------------------------------------------


class Registry:
    """The soak's view of the MLflow registry (the same store the jobs use)."""

    def __init__(self, work: Workdir, config: MlflowConfig) -> None:
        import mlflow

        self.work = work
        self.config = config
        self.model = config.model_name
        mlflow.set_tracking_uri(config.tracking_uri)

    def champion(self) -> str | None:
        from recspark.core.registry import champion_version

        version = champion_version(self.config)
        return None if version is None else str(version.version)

    def newest(self) -> tuple[str, str, str] | None:
        """The newest registered version, its promotion status and its run's reason."""
        import mlflow
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        versions = client.search_model_versions(f"name='{self.model}'")
        if not versions:
            return None
        newest = max(versions, key=lambda v: int(v.version))
        if not newest.run_id:
            return str(newest.version), "?", ""
        run = mlflow.get_run(newest.run_id)
        return (
            str(newest.version),
            run.data.tags.get("promotion_status", "?"),
            run.data.tags.get("promotion_reason", ""),
        )

    def away(self) -> Path:
        return self.work.store.with_name("mlflow.db.away")

    def take_down(self) -> None:
        """The store becomes unreachable: the file moves away, a folder stands in its place."""
        self.work.store.rename(self.away())
        self.work.store.mkdir()

    def bring_back(self) -> None:
        self.work.store.rmdir()
        self.away().rename(self.work.store)


# --- the soak -------------------------------------------------------------------------------


@dataclass
class Day:
    day: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return all(c.ok for c in self.checks)

    def line(self, days: int) -> str:
        checks = "  ".join(str(c) for c in self.checks)
        width = len(str(days))
        return f"day {self.day:>{width}}/{days} {self.seconds:6.0f}s  {checks}  | {'; '.join(self.notes)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "seconds": round(self.seconds, 1),
            "held": self.held,
            "notes": self.notes,
            "phases": self.phases,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
        }


class Soak:
    def __init__(self, args: argparse.Namespace, work: Workdir) -> None:
        self.args = args
        self.work = work
        self.schedule = Schedule.for_days(args.days)
        today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        shop_days = args.history_days + args.days
        self.spec = ShopSpec(
            users=args.users,
            items=args.items,
            categories=args.categories,
            events=args.events_per_day * shop_days,
            days=shop_days,
            seed=args.seed,
            start=today - timedelta(days=shop_days + 1),  # every event in the past
            files_per_day=args.files_per_day,
            bad_fraction=0.01,
            duplicate_fraction=0.02,
        )
        self.settings = work.settings(args.top_n)
        self.streams: dict[str, Job] = {}
        self.runs = 0
        self.jobs: list[Job] = []  # every process started, so none outlives the soak
        self.forgotten: set[str] = set()
        self.rng = random.Random(args.seed)
        self.champion: str | None = None  # as last read from the registry
        self.nights: list[Nightly] = []

    # Processes.

    def job(self, *command: str) -> Job:
        self.runs += 1
        job = Job(self.work, self.settings, list(command), f"{self.runs:03d}-{command[0]}")
        self.jobs.append(job)
        return job

    def start_stream(self, name: str) -> None:
        self.streams[name] = self.job(name).start()

    def run(self, *command: str) -> tuple[int, Job]:
        job = self.job(*command).start()
        return job.wait(), job

    def settle(self) -> Check:
        """Wait for both streams to take in what landed; a stream that died on its own is
        restarted (and the day fails), so the next days still run."""
        problems = []
        for _ in range(3):
            quiet, why = self.checker.wait_quiet(self.producer.landed_lines, self.streams)
            dead = [name for name, job in self.streams.items() if not job.alive()]
            for name in dead:
                problems.append(f"{name} died ({self.streams[name].log.name})")
                self.start_stream(name)
            if quiet and not dead:
                break
            if not dead:
                problems.append(why)
                break
        return Check("streams", not problems, "; ".join(problems) or "up")

    # Disturbances.

    def forget_candidates(self, day: int, count: int) -> list[str]:
        """Users with a list now and events still to land (their tombstone must drop those)."""
        events = self.events
        later = events[events["event_time"] >= self.spec.start + timedelta(days=self.args.history_days + day)]
        listed = self.checker.listed_users()
        pool = sorted(set(later["user_id"]) & listed - self.forgotten)
        return self.rng.sample(pool, min(count, len(pool)))

    def forget(self, user: str) -> str:
        code, job = self.run("forget-user", user)
        self.forgotten.add(user)
        return f"forget-user {user}" + ("" if code == 0 else f" FAILED ({code}, {job.log.name})")

    def kill(self, name: str) -> str:
        """SIGKILL the stream a few seconds into its work on the day's files (the refresh once
        ingest has folded them in, so its batch is under way), and restart it."""
        if name == "refresh":
            deadline = time.time() + QUIET_TIMEOUT
            while self.checker.ingest_read() < self.producer.landed_lines and time.time() < deadline:
                time.sleep(1)
            time.sleep(self.rng.uniform(1.0, 4.0))
        else:
            time.sleep(self.rng.uniform(3.0, 8.0))
        self.streams[name].kill()
        time.sleep(2.0)
        self.start_stream(name)
        return f"SIGKILL {name}, restarted"

    def change_catalog(self) -> str:
        """The most recommended items go out of stock (lists of users who do nothing hold them)."""
        count = max(3, self.args.items // 25)
        gone = set(self.checker.most_listed_items(count))
        records = [json.loads(line) for line in self.work.catalog.read_text().splitlines()]
        for record in records:
            if record["item_id"] in gone:
                record["available"] = False
        partial = self.work.catalog.with_name(".catalog.jsonl.tmp")
        partial.write_text("".join(json.dumps(r) + "\n" for r in records))
        partial.rename(self.work.catalog)
        return f"catalog: {len(gone)} most recommended items out of stock"

    # The night.

    def night(self, day: int, record: Day) -> Nightly:
        outage = day == self.schedule.outage_night
        before = self.champion
        if outage:
            self.registry.take_down()
            record.notes.append("registry away")
        began = time.time()
        train = self.job("train").start()
        if day in self.schedule.forget_at_night:
            self.wait_for(train, "train: read done")
            user = self.forget_candidates(day, 1)
            if user:
                record.notes.append(self.forget(user[0]) + " during train")
        code = train.wait()
        night = Nightly(code, champion_before=before, expected_failure=outage, seconds=time.time() - began)
        if not outage:
            newest = self.registry.newest()
            if newest is not None:
                night.version, night.status, night.reason = newest
            self.champion = night.champion_after = self.registry.champion()
        else:
            night.champion_after = before
        self.nights.append(night)
        return night

    def wait_for(self, job: Job, text: str, timeout: float = 600.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and job.alive() and text not in job.output():
            time.sleep(1)

    def lists_from_champion(self, served: set[str | None]) -> Check:
        """The lists come from the champion (the refresh follows the alias at its next batch)."""
        ok = served == {self.champion}
        detail = f"v{self.champion}" if self.champion else "none yet (fallback lists)"
        return Check("champion", ok, detail + ("" if ok else f" but lists from {sorted(map(str, served))}"))

    def train_check(self, night: Nightly) -> Check:
        """Tonight's decision matches the alias; a retrain with the champion's settings (all
        the soak's are) is promoted unless a baseline beats it; in the outage it fails."""
        problems = []
        if night.expected_failure:
            if night.exit_code != 2:
                problems.append(f"the train without its registry exited {night.exit_code}, not 2")
        elif night.exit_code != 0:
            problems.append(f"exited {night.exit_code}")
        elif night.status == "promoted" and night.champion_after != night.version:
            problems.append(f"v{night.version} promoted but the champion is v{night.champion_after}")
        elif night.status != "promoted":
            if night.champion_after != night.champion_before:
                problems.append(f"the champion moved to v{night.champion_after} without a promotion")
            if "champion" in night.reason:
                problems.append(f"held back against the champion: {night.reason[:200]}")
        if night.expected_failure:
            detail = f"failed without its registry ({night.exit_code}), v{night.champion_before} stays"
        elif night.status == "promoted":
            detail = f"v{night.version} promoted (was v{night.champion_before})"
        else:
            detail = f"v{night.version} {night.status}, v{night.champion_after} stays"
        return Check("train", not problems, detail + (f" [{'; '.join(problems)}]" if problems else ""))

    # The run.

    def setup(self) -> None:
        for folder in (self.work.landing, self.work.staging, self.work.logs):
            folder.mkdir(parents=True, exist_ok=True)
        began = time.time()
        summary = write_shop(self.spec, self.work.staging, self.work.staged_catalog)
        shutil.copy(self.work.staged_catalog, self.work.catalog)
        print(
            f"soak: {self.args.days} days on a shop of {summary.users} users, {summary.items} items, "
            f"{summary.events} events ({summary.duplicates} retries, {summary.bad_lines} broken lines) "
            f"over {self.spec.days} days ({self.args.history_days} of history); written in "
            f"{time.time() - began:.1f} s under {self.work.root}",
            flush=True,
        )
        print(f"soak: schedule {self.schedule}", flush=True)
        self.producer = Producer(self.work, self.spec, self.args.history_days, self.schedule)
        _, self.events = generate_events(self.spec)
        self.checker = Checker(self.work, self.settings, self.events)
        self.registry = Registry(self.work, self.checker.config.mlflow)

    def day(self, day: int) -> Day:
        record = Day(day)
        began = time.time()
        outage_day = self.schedule.outage_day(day)
        if day == self.schedule.catalog_change:  # before the day's events: their batches apply it
            record.notes.append(self.change_catalog())
        record.notes += self.producer.land_day(day)
        if day == 1:
            self.start_stream("ingest")
            ok, why = self.checker.wait_quiet(self.producer.landed_lines, self.streams, refresh=False)
            if not ok:
                record.checks.append(Check("streams", False, f"ingest never caught up: {why}"))
            self.start_stream("refresh")
            ok, why = self.checker.wait_for_lists(self.streams)  # the day's erasure picks a listed user
            if not ok:
                record.checks.append(Check("streams", False, f"the refresh never published: {why}"))
        if outage_day:
            record.notes.append("refresh batches without the registry")
        maintenance = self.job("maintain").start() if day in self.schedule.maintain else None
        for name, when in self.schedule.kill.items():
            if when == day:
                record.notes.append(self.kill(name))
        if day in self.schedule.forget_by_day:
            for user in self.forget_candidates(day, 1):
                record.notes.append(self.forget(user))
        if maintenance is not None:  # beside both streams at work on the day's files
            code = maintenance.wait()
            record.phases["maintain"] = round(time.time() - maintenance.started, 1)
            failed = "" if code == 0 else f" FAILED ({code}, {maintenance.log.name})"
            record.notes.append("maintain" + failed)
        record.checks.append(self.settle())
        record.phases["day"] = round(time.time() - began, 1)
        checked = time.time()
        if outage_day:
            self.registry.bring_back()
            record.notes.append("registry back")
        record.checks += [
            self.checker.exactly_once(self.producer.landed_ids, self.forgotten),
            self.checker.rebuild(),
            self.checker.forgotten(self.forgotten),
            self.checker.lists(self.args.top_n),
            self.checker.available(),
        ]
        record.checks.append(self.lists_from_champion(self.checker.served_versions()))
        record.phases["check"] = round(time.time() - checked, 1)
        night = self.night(day, record)
        record.phases["train"] = round(night.seconds, 1)
        record.checks.append(self.train_check(night))
        record.seconds = time.time() - began
        return record

    def finish(self) -> None:
        """Stop both streams (Ctrl-C), kill whatever else still runs, bring the store back."""
        for job in self.streams.values():
            job.stop()
        for job in self.jobs:
            job.kill()
        if hasattr(self, "registry") and self.registry.away().exists():
            self.registry.bring_back()

    def run_all(self) -> int:
        began = time.time()
        self.setup()
        days: list[Day] = []
        try:
            for day in range(1, self.args.days + 1):
                record = self.day(day)
                days.append(record)
                print(record.line(self.args.days), flush=True)
        finally:
            self.finish()
        wall = time.time() - began
        batches = self.checker.batches()
        files = self.checker.files()
        self.checker.stop()
        held = sum(d.held for d in days)
        per_day = sorted(d.seconds for d in days)
        summary = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "shop": {
                "users": self.spec.users,
                "items": self.spec.items,
                "events": self.spec.events,
                "days": self.spec.days,
                "history_days": self.args.history_days,
            },
            "wall_seconds": round(wall, 1),
            "day_seconds": {"median": per_day[len(per_day) // 2], "max": per_day[-1], "min": per_day[0]},
            "days_held": held,
            "days": [d.as_json() for d in days],
            "batches": batches,
            "files": files,
            "landed": {"files": self.producer.landed_files, "lines": self.producer.landed_lines},
            "forgotten": len(self.forgotten),
            "root": str(self.work.root),
        }
        median = per_day[len(per_day) // 2]
        print(
            f"soak: {len(days)} days in {wall / 60:.1f} min (a day: median {median:.0f} s, "
            f"longest {per_day[-1]:.0f} s); invariants held on {held} of {len(days)} days"
        )
        print(
            f"soak: batches: ingest {batches['ingest']}, refresh {batches['refresh']}; landed "
            f"{self.producer.landed_files} files, {self.producer.landed_lines} lines; "
            f"{len(self.forgotten)} users forgotten"
        )
        print("soak: files per table: " + ", ".join(f"{name} {n}" for name, n in files.items()))
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(summary, indent=2))
        return 0 if held == len(days) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--history-days", type=int, default=4)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--categories", type=int, default=8)
    parser.add_argument("--events-per-day", type=int, default=500)
    parser.add_argument("--files-per-day", type=int, default=4)
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", type=Path, default=None, help="the soak's folder (default: a new temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="recspark-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    # A SIGTERM (a test's timeout, `timeout`) unwinds like Ctrl-C, so no process outlives the soak.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    sys.exit(Soak(args, Workdir(root.resolve())).run_all())


if __name__ == "__main__":
    main()
