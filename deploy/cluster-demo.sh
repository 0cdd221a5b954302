#!/usr/bin/env bash
# `make cluster-demo`: the pipeline on a real Spark cluster on this machine. A standalone master
# and one worker (deploy/standalone.sh, bound to 127.0.0.1) run every job as spark-submit sends
# it to any cluster: ingest, train (which promotes the first model), a full refresh, then fresh
# events and an incremental refresh of the users who sent them. Then the on-call overview.
#
# Everything lives under .recspark/cluster-demo/ (recreated on each run; paths are absolute,
# as executors in other JVMs need), the cluster is stopped on exit, success or not, and each
# job's log is in .recspark/cluster-demo/logs/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
DEMO="$ROOT/.recspark/cluster-demo"
CONF="$ROOT/conf/local.yaml"

step() { echo "$(date -u +%H:%M:%S) cluster-demo: $*"; }

rm -rf "$DEMO"
mkdir -p "$DEMO/logs"
# The demo's own lake, landing folder, catalog and MLflow store (absolute paths), on conf/local.yaml.
export RECSPARK__LAKE__ROOT="$DEMO/lake"
export RECSPARK__INGEST__PATH="$DEMO/incoming/events"
export RECSPARK__CATALOG__PATH="$DEMO/incoming/catalog.jsonl"
export RECSPARK__MLFLOW__TRACKING_URI="sqlite:///$DEMO/mlflow.db"
export RECSPARK__MLFLOW__ARTIFACT_LOCATION="$DEMO/mlartifacts"

step "starting a standalone master and worker on 127.0.0.1"
MASTER="$("$ROOT/deploy/standalone.sh" start "$DEMO/cluster")"
trap '"$ROOT/deploy/standalone.sh" stop "$DEMO/cluster"' EXIT
export SPARK_MASTER="$MASTER" SPARK_LOCAL_IP=127.0.0.1
# The executors' Python: this virtualenv (on a real cluster, the image's or a shipped one).
export PYSPARK_PYTHON="$VENV/bin/python"

run() {
    local name="$1"
    shift
    step "$name"
    if ! "$@" >"$DEMO/logs/$name.log" 2>&1; then
        tail -n 40 "$DEMO/logs/$name.log" >&2
        step "$name failed: see $DEMO/logs/$name.log"
        exit 1
    fi
}

run generate "$VENV/bin/recspark" generate --conf "$CONF" --users 1000 --items 200 --events 40000 --days 30
run ingest "$ROOT/deploy/submit.sh" ingest --conf "$CONF" --once
run train "$ROOT/deploy/submit.sh" train --conf "$CONF"
grep -h "model version" "$DEMO/logs/train.log" | tail -n 1
run full-refresh "$ROOT/deploy/submit.sh" refresh --conf "$CONF" --once

step "three users buy something: their lists are refreshed, nobody else's"
"$VENV/bin/python" - "$DEMO/incoming/events" <<'PY'
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

def parsed(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # the generator's deliberately broken lines
    return record if isinstance(record, dict) and record.get("user_id") and record.get("item_id") else None


folder = Path(sys.argv[1])
lines = sorted(folder.glob("*.jsonl"))[-1].read_text().splitlines()
first = next(r for r in map(parsed, lines) if r is not None)
now = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
records = [
    {"event_id": f"demo-{n}", "event_time": now, "user_id": user, "item_id": first["item_id"],
     "event_type": "purchase", "value": 1}
    for n, user in enumerate([first["user_id"], "cluster-demo-new-user", "cluster-demo-other"])
]
partial = folder / ".fresh.jsonl.tmp"  # the producer contract: write, then rename into place
partial.write_text("".join(json.dumps(r) + "\n" for r in records))
partial.rename(folder / "fresh.jsonl")
print(f"landed {len(records)} purchases, e.g. by {first['user_id']}")
PY
run ingest-fresh "$ROOT/deploy/submit.sh" ingest --conf "$CONF" --once
run refresh "$ROOT/deploy/submit.sh" refresh --conf "$CONF" --once

apps="$(find "$DEMO/cluster/work" -maxdepth 1 -name 'app-*' | wc -l)"
step "done: $apps applications ran on $MASTER, executors' logs under $DEMO/cluster/work"
"$VENV/bin/recspark" status --conf "$CONF" 2>"$DEMO/logs/status.log"
