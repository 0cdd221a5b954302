#!/usr/bin/env bash
# Run a command under a per-job lock, appending its output to a per-job log:
#
#   deploy/cron/run-locked.sh LOCKNAME -- command [args...]
#
# - `flock -n` on $RECSPARK_LOCK_DIR/LOCKNAME.lock: if an earlier run of the same job still
#   holds the lock, this run says so and exits 0 at once (a skipped run is not a failure;
#   the next scheduled run catches up, since every job processes "everything available now").
# - stdout and stderr of the command are appended to $RECSPARK_LOG_DIR/LOCKNAME.log, between
#   a start line and an end line carrying the exit code; the wrapper exits with that code.
# - RECSPARK_LOCK_WAIT=SECONDS waits up to that long for the lock instead (for a step that
#   must follow a running job rather than be skipped, as in daily.sh); still locked after
#   that: exit 75 (EX_TEMPFAIL).
# - the command inherits the lock, so the lock is released when the command (and anything
#   it left running) has ended, and never earlier.
# - RECSPARK_TIMEOUT=SECONDS stops the command (TERM, then KILL a minute later) if it runs
#   longer; the exit code is then 124.
#
# Defaults: RECSPARK_LOCK_DIR=<repo>/.recspark/locks, RECSPARK_LOG_DIR=<repo>/.recspark/logs.
# Rotate the logs with logrotate (copytruncate) or similar.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

usage() {
    echo "usage: deploy/cron/run-locked.sh LOCKNAME -- command [args...]" >&2
    exit 2
}

[[ $# -ge 3 && "$2" == "--" ]] || usage
NAME="$1"
shift 2
if [[ ! "$NAME" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "run-locked.sh: lock name must be letters, digits, '.', '_' or '-': $NAME" >&2
    exit 2
fi

LOCK_DIR="${RECSPARK_LOCK_DIR:-$ROOT/.recspark/locks}"
LOG_DIR="${RECSPARK_LOG_DIR:-$ROOT/.recspark/logs}"
mkdir -p "$LOCK_DIR" "$LOG_DIR"
LOCK="$LOCK_DIR/$NAME.lock"
LOG="$LOG_DIR/$NAME.log"

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
say() {
    local line
    line="$(stamp) run-locked[$NAME] pid $$: $*"
    echo "$line" >&2
    echo "$line" >>"$LOG"
}

exec 9>>"$LOCK"
if [[ -n "${RECSPARK_LOCK_WAIT:-}" ]]; then
    if ! flock -w "$RECSPARK_LOCK_WAIT" 9; then
        say "locked: $LOCK still held after waiting ${RECSPARK_LOCK_WAIT}s; giving up"
        exit 75
    fi
elif ! flock -n 9; then
    say "locked: an earlier run still holds $LOCK; skipping this run"
    exit 0
fi

say "start: $(printf '%q ' "$@")"
started=$SECONDS
status=0
if [[ -n "${RECSPARK_TIMEOUT:-}" ]]; then
    timeout --kill-after=60 "$RECSPARK_TIMEOUT" "$@" >>"$LOG" 2>&1 || status=$?
else
    "$@" >>"$LOG" 2>&1 || status=$?
fi
say "end: exit $status after $((SECONDS - started))s"
exit "$status"
