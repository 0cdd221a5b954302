#!/usr/bin/env bash
# The cron version of the recspark_daily DAG:
#
#   deploy/cron/daily.sh CONF [job args...]
#
# 1. a fresh ingest: `ingest --once` under the ingest_events lock (the crontab's), waiting for
#    a run that is still going to finish first (the DAG's wait_for_ingest sensor); if it
#    fails, nothing is trained on stale data;
# 2. `train`;
# 3. `refresh --once` under the refresh_recommendations lock (waiting for a running 15-minute
#    refresh to finish): the job recomputes every user when the champion changed, i.e. when
#    step 2 promoted a model, and otherwise only users with new activity.
# Extra arguments (e.g. --set train.rank=64) are passed to every job. Run it under its own
# lock from cron: run-locked.sh daily -- deploy/cron/daily.sh CONF
# RECSPARK_DAILY_LOCK_WAIT (seconds, default 7200) bounds the waits for the other jobs' locks.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [[ $# -lt 1 ]]; then
    echo "usage: deploy/cron/daily.sh CONF [job args...]" >&2
    exit 2
fi
CONF="$1"
shift
SUBMIT="$ROOT/deploy/submit.sh"
export RECSPARK_LOCK_WAIT="${RECSPARK_DAILY_LOCK_WAIT:-7200}"

step() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) daily: $*"; }

step "ingest --once"
"$HERE/run-locked.sh" ingest_events -- "$SUBMIT" ingest --conf "$CONF" --once "$@"
step "train"
"$SUBMIT" train --conf "$CONF" "$@"
step "refresh --once"
"$HERE/run-locked.sh" refresh_recommendations -- "$SUBMIT" refresh --conf "$CONF" --once "$@"
step "done"
