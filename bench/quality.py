"""Benchmark: quality of the served lists on real logs, against tuned peers on the same split.

    .venv/bin/pip install -e ".[bench]"          # the peer: implicit (CPU)
    .venv/bin/python bench/quality.py                       # the shop log in ../shared/data
    .venv/bin/python bench/quality.py --log generated       # a generated multi-behaviour shop
    .venv/bin/python bench/quality.py --log ratings --path ratings.csv   # userId,movieId,rating,timestamp
    .venv/bin/python bench/quality.py --log events --path events.csv     # contract events (CSV or JSON lines)

Protocol (a new user's view of the project), in up to four cells: two splits x two truths.

Splits (``--splits``):
- ``per_user``: every user's newest 20% of events (rounded down, so users with at least 5 events)
  is held out as their future;
- ``time``: one cut at time T, the 90% quantile of event times; the future is what users known
  before T do after it (the way a shop lives: one model, served from T on).

Truths (``--truths``), each over users who have at least one relevant item:
- ``new``: future items new to the shopper (no event with them before the cut);
- ``acted``: every item the shopper carts or buys in the future (their own items included).

Only the past goes in as contract event files: ``recspark ingest --once``, ``recspark train`` and
``recspark recommend`` run at the defaults in a fresh lake, once per split, and the served
``recommendations`` table (after the guard's decision: fallback lists when nothing was promoted)
is scored at K = 10 (NDCG and recall) against both truths.

On the same split, the peers, each tuned on a validation split of the past made the same way
(per user: the newest 20% of the past; time: a cut at the 90% quantile of the past), by NDCG on
new items, then refitted on the whole past; none is shown what the shopper already had, except
the last, which shows exactly that first:
- *popular*: items by number of users;
- *recent*: items by number of users over the newest 5% of the past (by time), then popular;
- *implicit*: `implicit`'s ALS, a 36-point grid;
- *EASE*: lambda from a 4-point grid;
- *own+EASE*: the shopper's own past items they did not buy, newest first (carts before views at
  the same time), then EASE.
Nothing of the held-out future reaches any model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

ROOT = Path(__file__).resolve().parents[1]
RETAIL = ROOT.parent / "shared" / "data" / "online-retail" / "online_retail_sample30k.csv"
K = 10


# --------------------------------------------------------------------------------------------
# Logs as contract events (event_id, event_time, user_id, item_id, event_type, value)


def retail_events(path: Path) -> pd.DataFrame:
    """The UCI Online Retail sample as purchases, mapped as its README says."""
    raw = pd.read_csv(path, dtype={"CustomerID": str, "StockCode": str, "InvoiceNo": str})
    raw = raw[raw["CustomerID"].notna() & (raw["Quantity"] > 0) & ~raw["InvoiceNo"].str.startswith("C")]
    return pd.DataFrame(
        {
            "event_id": [f"r{i}" for i in raw.index],
            "event_time": pd.to_datetime(raw["InvoiceDate"]).dt.tz_localize("UTC"),
            "user_id": raw["CustomerID"].str.replace(r"\.0$", "", regex=True),
            "item_id": raw["StockCode"].str.strip(),
            "event_type": "purchase",
            "value": raw["Quantity"].astype(float),
        }
    ).reset_index(drop=True)


def ratings_events(path: Path) -> pd.DataFrame:
    """A MovieLens-style ratings CSV (userId, movieId, rating, timestamp in seconds); ratings
    below 1 (half stars) are raised to 1, the contract's lowest rating."""
    raw = pd.read_csv(path)
    return pd.DataFrame(
        {
            "event_id": [f"m{i}" for i in range(len(raw))],
            "event_time": pd.to_datetime(raw["timestamp"], unit="s", utc=True),
            "user_id": raw["userId"].astype(str),
            "item_id": raw["movieId"].astype(str),
            "event_type": "rating",
            "value": raw["rating"].clip(1, 5).astype(float),
        }
    )


def contract_events(path: Path) -> pd.DataFrame:
    """Contract events from a CSV (header: event_id,event_time,user_id,item_id,event_type[,value])
    or JSON lines file; impressions are left out (they are not interest)."""
    if path.suffix.lower() == ".csv":
        raw = pd.read_csv(path, dtype={"event_id": str, "user_id": str, "item_id": str})
    else:
        raw = pd.read_json(path, lines=True, dtype={"event_id": str, "user_id": str, "item_id": str})
    raw = raw[raw["event_type"] != "impression"]
    value = raw["value"].astype(float) if "value" in raw else np.nan
    return pd.DataFrame(
        {
            "event_id": raw["event_id"].astype(str),
            "event_time": pd.to_datetime(raw["event_time"], utc=True),
            "user_id": raw["user_id"].astype(str),
            "item_id": raw["item_id"].astype(str),
            "event_type": raw["event_type"],
            "value": value,
        }
    ).reset_index(drop=True)


def generated_events(users: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from recspark.datasets.shop.events import generate_events
    from recspark.datasets.shop.spec import ShopSpec

    catalog, events = generate_events(
        ShopSpec(users=users, items=1000, events=users * 30, days=60, seed=seed)
    )
    events = events.drop(columns=["session_id"])
    return catalog, events


def split_newest(events: pd.DataFrame, fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's newest ``fraction`` of events (rounded down) is their future."""
    ordered = events.sort_values(["user_id", "event_time", "event_id"], kind="stable")
    count = ordered.groupby("user_id")["event_id"].transform("size")
    position = ordered.groupby("user_id").cumcount()
    future = position >= count - np.floor(fraction * count)
    return ordered[~future], ordered[future]


def split_at_time(events: pd.DataFrame, quantile: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One cut at the ``quantile`` of event times: the past before it, and the future of the
    users the past knows (what a model trained at the cut could serve)."""
    cut = events["event_time"].quantile(quantile)
    past = events[events["event_time"] < cut]
    future = events[(events["event_time"] >= cut) & events["user_id"].isin(set(past["user_id"]))]
    return past, future


SPLITS = {"per_user": split_newest, "time": split_at_time}
TRUTHS = ("new", "acted")
ACTED = ("add_to_cart", "purchase")


def write_event_files(events: pd.DataFrame, folder: Path) -> None:
    """Contract JSON lines, one file per month, written elsewhere and renamed into the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    months = events["event_time"].dt.strftime("%Y%m")
    for month, part in events.groupby(months):
        lines = []
        stamps = part["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        for row, stamp in zip(part.itertuples(index=False), stamps, strict=True):
            record = {
                "event_id": row.event_id,
                "event_time": stamp,
                "user_id": row.user_id,
                "item_id": row.item_id,
                "event_type": row.event_type,
            }
            if row.value is not None and not (isinstance(row.value, float) and math.isnan(row.value)):
                record["value"] = row.value
            lines.append(json.dumps(record))
        staging = folder.parent / f".events-{month}.jsonl"
        staging.write_text("\n".join(lines) + "\n")
        staging.rename(folder / f"events-{month}.jsonl")


# --------------------------------------------------------------------------------------------
# Scoring lists against the future


def relevance(past: pd.DataFrame, future: pd.DataFrame) -> dict[str, dict[str, set]]:
    """Per truth, per user with at least one: the future items new to them (``new``) and every
    item they cart or buy in the future (``acted``)."""
    seen = {str(u): s for u, s in past.groupby("user_id")["item_id"].agg(set).items()}
    every = {str(u): s for u, s in future.groupby("user_id")["item_id"].agg(set).items()}
    new = {u: items - seen.get(u, set()) for u, items in every.items()}
    acted = {
        str(u): s
        for u, s in future[future["event_type"].isin(ACTED)].groupby("user_id")["item_id"].agg(set).items()
    }
    return {"new": {u: s for u, s in new.items() if s}, "acted": acted}


def score(lists: dict[str, list[str]], relevant: dict[str, set]) -> dict[str, float]:
    ndcg, recall = [], []
    for user, items in relevant.items():
        top = lists.get(user, [])[:K]
        dcg = sum(1 / math.log2(i + 2) for i, item in enumerate(top) if item in items)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(items), K)))
        ndcg.append(dcg / ideal)
        recall.append(len(set(top) & items) / len(items))
    return {"ndcg": float(np.mean(ndcg)), "recall": float(np.mean(recall)), "users": len(ndcg)}


# --------------------------------------------------------------------------------------------
# Peers, tuned on a validation split of the past


class Matrix:
    """The past as a binary user x item matrix, with the id maps."""

    def __init__(self, events: pd.DataFrame) -> None:
        pairs = events[["user_id", "item_id"]].drop_duplicates()
        self.users = np.sort(pairs["user_id"].unique())
        self.items = np.sort(pairs["item_id"].unique())
        self.user_index = {u: i for i, u in enumerate(self.users)}
        self.item_index = {it: i for i, it in enumerate(self.items)}
        rows = pairs["user_id"].map(self.user_index).to_numpy()
        cols = pairs["item_id"].map(self.item_index).to_numpy()
        self.x = sparse.csr_matrix(
            (np.ones(len(pairs), dtype=np.float32), (rows, cols)), shape=(len(self.users), len(self.items))
        )

    def top(self, scores: np.ndarray, rows: np.ndarray) -> dict[str, list[str]]:
        scores = np.array(scores, dtype=np.float64)
        scores[self.x[rows].nonzero()] = -np.inf  # never what the user already had
        best = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        return {self.users[r]: [self.items[j] for j in best[i]] for i, r in enumerate(rows)}


def popular_lists(m: Matrix, users: list[str], popularity: np.ndarray | None = None) -> dict[str, list[str]]:
    rows = np.array([m.user_index[u] for u in users if u in m.user_index])
    if popularity is None:
        popularity = np.asarray(m.x.sum(axis=0)).ravel()
    return m.top(np.tile(popularity, (len(rows), 1)), rows)


def recent_popular_lists(m: Matrix, past: pd.DataFrame, users: list[str], share: float = 0.05):
    """Items by users over the newest ``share`` of the past (by time), ties and the rest by
    all-time popularity."""
    since = past["event_time"].quantile(1 - share)
    recent = past[past["event_time"] >= since].drop_duplicates(["user_id", "item_id"])
    counts = recent["item_id"].map(m.item_index).value_counts()
    popularity = np.asarray(m.x.sum(axis=0)).ravel()
    score = popularity / (popularity.max() + 1.0)  # all-time popularity breaks ties only
    score[counts.index.to_numpy()] += counts.to_numpy()
    return popular_lists(m, users, score)


def ease_weights(m: Matrix, l2: float) -> np.ndarray:
    gram = (m.x.T @ m.x).toarray().astype(np.float64)
    inverse = np.linalg.inv(gram + l2 * np.eye(gram.shape[0]))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def ease_lists(m: Matrix, users: list[str], l2: float) -> dict[str, list[str]]:
    rows = np.array([m.user_index[u] for u in users if u in m.user_index])
    return m.top(m.x[rows] @ ease_weights(m, l2), rows)


# Among a shopper's own items with the same newest time, the stronger intent first.
INTENT = {"add_to_cart": 0, "rating": 1, "view": 2, "remove_from_cart": 3}


def own_unbought(past: pd.DataFrame) -> dict[str, list[str]]:
    """Per user, the items they had but never bought, newest first (intent breaks ties)."""
    bought = past[past["event_type"] == "purchase"][["user_id", "item_id"]].drop_duplicates()
    mine = past[past["event_type"].isin(INTENT)].merge(
        bought, on=["user_id", "item_id"], how="left", indicator=True
    )
    mine = mine[mine["_merge"] == "left_only"].assign(intent=lambda f: f["event_type"].map(INTENT))
    newest = mine.groupby(["user_id", "item_id"]).agg(last=("event_time", "max"), intent=("intent", "min"))
    newest = newest.reset_index().sort_values(
        ["user_id", "last", "intent", "item_id"], ascending=[True, False, True, True]
    )
    return {str(u): list(items) for u, items in newest.groupby("user_id")["item_id"].agg(list).items()}


def own_then_ease_lists(m: Matrix, past: pd.DataFrame, users: list[str], l2: float) -> dict[str, list[str]]:
    own = own_unbought(past)
    ease = ease_lists(m, users, l2)
    lists = {}
    for user in users:
        mine = own.get(user, [])[:K]
        lists[user] = mine + [item for item in ease.get(user, []) if item not in mine][: K - len(mine)]
    return lists


def implicit_lists(
    m: Matrix, users: list[str], factors: int, reg: float, alpha: float
) -> dict[str, list[str]]:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, regularization=reg, alpha=alpha, iterations=15, random_state=7
        )
        model.fit(m.x, show_progress=False)
    rows = np.array([m.user_index[u] for u in users if u in m.user_index])
    return m.top(model.user_factors[rows] @ model.item_factors.T, rows)


IMPLICIT_GRID: dict[str, list[Any]] = {  # factors are whole numbers
    "factors": [32, 64, 128],
    "reg": [0.01, 0.1, 1.0, 10.0],
    "alpha": [1.0, 5.0, 20.0],
}
EASE_GRID = [100.0, 300.0, 1000.0, 3000.0]


def tuned_peers(past: pd.DataFrame, users: list[str], split: str) -> dict[str, dict]:
    """Tune each peer on a validation split of the past made like ``split`` (by NDCG on new
    items), refit on the past, and return its lists for ``users``."""
    inner_past, inner_future = SPLITS[split](past)
    inner_relevant = relevance(inner_past, inner_future)["new"]
    inner, whole = Matrix(inner_past), Matrix(past)
    inner_users = list(inner_relevant)
    out: dict[str, dict] = {}
    best = max(
        (score(implicit_lists(inner, inner_users, f, r, a), inner_relevant)["ndcg"], (f, r, a))
        for f, r, a in itertools.product(*IMPLICIT_GRID.values())
    )
    f, r, a = best[1]
    out["implicit"] = {
        "settings": f"factors={f} regularization={r} alpha={a}",
        "lists": implicit_lists(whole, users, f, r, a),
    }
    best_l2 = max(
        (score(ease_lists(inner, inner_users, l2), inner_relevant)["ndcg"], l2) for l2 in EASE_GRID
    )[1]
    out["ease"] = {"settings": f"λ={best_l2:g}", "lists": ease_lists(whole, users, best_l2)}
    out["own+ease"] = {
        "settings": f"own unbought by recency, then EASE λ={best_l2:g}",
        "lists": own_then_ease_lists(whole, past, users, best_l2),
    }
    out["popular"] = {"settings": "users per item", "lists": popular_lists(whole, users)}
    out["recent"] = {
        "settings": "users per item, newest 5% of the past",
        "lists": recent_popular_lists(whole, past, users),
    }
    return out


# --------------------------------------------------------------------------------------------
# recspark, as a new user runs it


def run_recspark(
    past: pd.DataFrame, catalog: pd.DataFrame | None, workdir: Path, overrides: list[str]
) -> dict:
    """ingest --once, train, recommend in a fresh lake at the defaults; returns the served lists."""
    from recspark.cli import main

    incoming = workdir / "incoming" / "events"
    write_event_files(past, incoming)
    settings = [
        f"lake.root={workdir / 'lake'}",
        f"ingest.path={incoming}",
        f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
        f"mlflow.artifact_location={workdir / 'mlartifacts'}",
    ]
    if catalog is not None:
        catalog_path = workdir / "incoming" / "catalog.jsonl"
        catalog.assign(updated_at=catalog["updated_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_json(
            catalog_path, orient="records", lines=True
        )
        settings.append(f"catalog.path={catalog_path}")
    else:
        settings.append("catalog.path=null")
    args = [a for s in [*settings, *overrides] for a in ("--set", s)]
    timings = {}
    for command in (["ingest", "--once"], ["train"], ["recommend"]):
        started = time.time()
        code = main([*command, *args])
        timings[command[0]] = round(time.time() - started, 1)
        if code != 0:
            raise SystemExit(f"recspark {command[0]} failed with exit code {code}")
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    assert spark is not None, "the commands above left their session active"
    served = spark.read.format("delta").load(str(workdir / "lake" / "recommendations")).toPandas()
    lists = {user: list(group.sort_values("rank")["item_id"]) for user, group in served.groupby("user_id")}
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    run = mlflow.search_runs(
        experiment_names=["recspark"], filter_string="tags.mlflow.runName LIKE 'train-%'"
    )
    first = run.iloc[0]
    return {
        "lists": lists,
        "timings": timings,
        "family": first.get("tags.model_family"),
        "settings": {
            k.removeprefix("params."): first[k]
            for k in first.index
            if k.startswith("params.")
            and k.split(".", 1)[1] in ("family", "rank", "reg_param", "alpha", "ease_l2", "blend_weight")
        },
        "status": first.get("tags.promotion_status"),
        "test_period": first.get("tags.test_period"),
        "sources": served["source"].value_counts().to_dict(),
    }


def score_cells(
    lists: dict[str, list[str]], truths: dict[str, dict[str, set]], wanted: list[str]
) -> dict[str, dict[str, float]]:
    return {truth: score(lists, truths[truth]) for truth in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", choices=("retail", "ratings", "generated", "events"), default="retail")
    parser.add_argument("--path", type=Path, default=None, help="the log file (retail: the shared sample)")
    parser.add_argument("--users", type=int, default=3000, help="generated shop: users")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--splits", default=",".join(SPLITS), help=f"comma-separated, of {list(SPLITS)}")
    parser.add_argument("--truths", default=",".join(TRUTHS), help=f"comma-separated, of {list(TRUTHS)}")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-recspark", action="store_true")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recspark config override"
    )
    args = parser.parse_args()
    splits = [s for s in args.splits.split(",") if s]
    wanted = [t for t in args.truths.split(",") if t]
    for name in splits:
        if name not in SPLITS:
            parser.error(f"unknown split {name!r}")
    for name in wanted:
        if name not in TRUTHS:
            parser.error(f"unknown truth {name!r}")

    started = time.time()
    catalog = None
    if args.log == "retail":
        events = retail_events(args.path or RETAIL)
    elif args.log in ("ratings", "events"):
        if args.path is None:
            parser.error(f"--log {args.log} needs --path")
        events = ratings_events(args.path) if args.log == "ratings" else contract_events(args.path)
    else:
        catalog, events = generated_events(args.users, args.seed)
    print(
        f"{args.log}: {len(events):,} events, {events['user_id'].nunique():,} users, "
        f"{events['item_id'].nunique():,} items; types {events['event_type'].value_counts().to_dict()}",
        flush=True,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recspark-bench-quality-"))
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 80)
    report: dict = {"log": args.log, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cells": []}
    for split in splits:
        past, future = SPLITS[split](events)
        truths = relevance(past, future)
        users = sorted(set(truths["new"]) | set(truths["acted"]))
        print(
            f"\nsplit {split}: past {len(past):,} events, future of {len(users):,} users "
            + ", ".join(f"{t}: {len(truths[t]):,} users" for t in wanted),
            flush=True,
        )
        rows: dict[str, dict] = {}
        if not args.skip_recspark:
            recspark = run_recspark(past, catalog, workdir / split, args.set)
            rows["recspark"] = {
                "settings": f"{recspark['family']} ({recspark['status']}): {recspark['settings']}",
                "lists": recspark["lists"],
            }
            report.setdefault("recspark", {})[split] = {k: v for k, v in recspark.items() if k != "lists"}
        if not args.skip_peers:
            rows |= tuned_peers(past, users, split)
        for truth in wanted:
            table = [
                {"recommender": name, "settings": row["settings"], **score(row["lists"], truths[truth])}
                for name, row in rows.items()
            ]
            print(f"\n{split} split, truth {truth} (NDCG@{K} / recall@{K}):")
            print(pd.DataFrame(table).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
            report["cells"].append({"split": split, "truth": truth, "table": table})
    report["wall_seconds"] = round(time.time() - started, 1)
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
