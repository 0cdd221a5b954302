"""Benchmark: quality of the served lists on real logs, against tuned peers on the same split.

    .venv/bin/pip install -e ".[bench]"          # the peer: implicit (CPU)
    .venv/bin/python bench/quality.py                       # the shop log in ../shared/data
    .venv/bin/python bench/quality.py --log generated       # a generated shop
    .venv/bin/python bench/quality.py --log ratings --path ratings.csv   # userId,movieId,rating,timestamp

Protocol (a new user's view of the project): every user's newest 20% of events (rounded down, so
users with at least 5 events) is held out as their future. Only the past goes in as contract
event files: ``recspark ingest --once``, ``recspark train`` and ``recspark recommend`` run at the
defaults in a fresh lake. The served ``recommendations`` table is then scored against each user's
future at K = 10: NDCG and recall, over users with a future item they had not interacted with
before ("new items", the rule serving follows: bought and rated items are never recommended
again), and over all future items.

On the same split, with the same exclusions, the peers: most popular; `implicit`'s ALS with a
small grid tuned on a validation split of the past (each user's newest 20% of it), refitted on
the whole past; EASE with λ tuned the same way. Nothing of the held-out future reaches any model.
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


def generated_events(users: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from recspark.ops.generate import ShopSpec, generate_events

    catalog, events = generate_events(
        ShopSpec(users=users, items=1000, events=users * 30, days=60, seed=seed)
    )
    events = events.drop(columns=["session_id"])
    events["value"] = events["value"].where(events["value"].notna(), None)
    return catalog, events


def split_newest(events: pd.DataFrame, fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's newest ``fraction`` of events (rounded down) is their future."""
    ordered = events.sort_values(["user_id", "event_time", "event_id"], kind="stable")
    count = ordered.groupby("user_id")["event_id"].transform("size")
    position = ordered.groupby("user_id").cumcount()
    future = position >= count - np.floor(fraction * count)
    return ordered[~future], ordered[future]


def write_event_files(events: pd.DataFrame, folder: Path) -> None:
    """Contract JSON lines, one file per month, written elsewhere and renamed into the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    months = events["event_time"].dt.strftime("%Y%m")
    for month, part in events.groupby(months):
        lines = []
        for row in part.itertuples(index=False):
            record = {
                "event_id": row.event_id,
                "event_time": row.event_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
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


def relevance(past: pd.DataFrame, future: pd.DataFrame) -> tuple[dict[str, set], dict[str, set]]:
    """Per user: future items new to them, and all future items."""
    seen = past.groupby("user_id")["item_id"].agg(set).to_dict()
    every = future.groupby("user_id")["item_id"].agg(set).to_dict()
    new = {u: items - seen.get(u, set()) for u, items in every.items()}
    return {u: s for u, s in new.items() if s}, every


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


def popular_lists(m: Matrix, users: list[str]) -> dict[str, list[str]]:
    rows = np.array([m.user_index[u] for u in users if u in m.user_index])
    popularity = np.asarray(m.x.sum(axis=0)).ravel()
    return m.top(np.tile(popularity, (len(rows), 1)), rows)


def ease_lists(m: Matrix, users: list[str], l2: float) -> dict[str, list[str]]:
    gram = (m.x.T @ m.x).toarray().astype(np.float64)
    inverse = np.linalg.inv(gram + l2 * np.eye(gram.shape[0]))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    rows = np.array([m.user_index[u] for u in users if u in m.user_index])
    return m.top(m.x[rows] @ weights, rows)


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


IMPLICIT_GRID = {"factors": [32, 64, 128], "reg": [0.01, 0.1, 1.0, 10.0], "alpha": [1.0, 5.0, 20.0]}
EASE_GRID = [100.0, 300.0, 1000.0, 3000.0]


def tuned_peers(past: pd.DataFrame, users: list[str], relevant: dict[str, set]) -> dict[str, dict]:
    """Tune each peer on a validation split of the past (by new-item NDCG), refit on the past,
    and score its lists for ``users`` against ``relevant``."""
    inner_past, inner_future = split_newest(past)
    inner_relevant, _ = relevance(inner_past, inner_future)
    inner, whole = Matrix(inner_past), Matrix(past)
    inner_users = list(inner_relevant)
    out: dict[str, dict] = {}
    best = max(
        (
            (score(implicit_lists(inner, inner_users, f, r, a), inner_relevant)["ndcg"], (f, r, a))
            for f, r, a in itertools.product(*IMPLICIT_GRID.values())
        ),
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
    out["popular"] = {"settings": "users per item", "lists": popular_lists(whole, users)}
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
    else:  # a real log has no catalog: every item with interactions is eligible
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", choices=("retail", "ratings", "generated"), default="retail")
    parser.add_argument("--path", type=Path, default=None, help="the log file (retail: the shared sample)")
    parser.add_argument("--users", type=int, default=3000, help="generated shop: users")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recspark config override"
    )
    args = parser.parse_args()

    started = time.time()
    catalog = None
    if args.log == "retail":
        events = retail_events(args.path or RETAIL)
    elif args.log == "ratings":
        if args.path is None:
            parser.error("--log ratings needs --path")
        events = ratings_events(args.path)
    else:
        catalog, events = generated_events(args.users, args.seed)
    past, future = split_newest(events)
    new_items, all_items = relevance(past, future)
    print(
        f"{args.log}: {len(events):,} events, {events['user_id'].nunique():,} users, "
        f"{events['item_id'].nunique():,} items; future of {len(all_items):,} users "
        f"({len(new_items):,} with a new item)",
        flush=True,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recspark-bench-quality-"))
    recspark = run_recspark(past, catalog, workdir, args.set)
    rows = {
        "recspark": {"settings": f"{recspark['family']}: {recspark['settings']}", "lists": recspark["lists"]}
    }
    if not args.skip_peers:
        rows |= tuned_peers(past, list(all_items), new_items)
    table = []
    for name, row in rows.items():
        table.append(
            {
                "recommender": name,
                "settings": row["settings"],
                **{f"new_{k}": v for k, v in score(row["lists"], new_items).items()},
                **{f"all_{k}": v for k, v in score(row["lists"], all_items).items()},
            }
        )
    frame = pd.DataFrame(table)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 80)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(
        json.dumps(
            {
                "log": args.log,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                "recspark": {k: v for k, v in recspark.items() if k != "lists"},
                "table": table,
                "wall_seconds": round(time.time() - started, 1),
            },
            default=str,
        )
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
