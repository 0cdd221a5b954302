#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and one worker, started from pyspark's
# own jars (no Spark distribution to install), every port bound to 127.0.0.1. The jobs then run
# as they do on a real cluster: the driver in its own JVM, executors in the worker's JVMs,
# recspark's code shipped with --py-files. `make cluster-demo` and tests/entrypoints/test_cluster.py use it.
#
#   deploy/standalone.sh start [STATE_DIR]   # prints the master URL: spark://127.0.0.1:PORT
#   deploy/standalone.sh stop [STATE_DIR]    # stops both (safe to call when nothing runs)
#
# STATE_DIR (default <repo>/.recspark/cluster) holds the pids, the daemons' logs (logs/), the
# worker's work directory with each executor's stdout/stderr (work/), and the master URL
# (master-url). Submit to it with:
#   SPARK_LOCAL_IP=127.0.0.1 SPARK_MASTER="$(cat STATE_DIR/master-url)" deploy/submit.sh JOB ...
#
# Environment: VENV (default <repo>/.venv: its spark-class is used unless SPARK_HOME is set),
# RECSPARK_WORKER_CORES (default 2), RECSPARK_WORKER_MEMORY (default 4g),
# RECSPARK_CLUSTER_WAIT (seconds to wait for the master and the worker, default 180).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="$VENV/bin/python"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
if [[ -z "${SPARK_HOME:-}" ]]; then
    # pyspark's package directory is a Spark home: its bin/, sbin/ and jars/.
    SPARK_HOME="$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
    export SPARK_HOME
fi
SPARK_CLASS="$SPARK_HOME/bin/spark-class"
# Master, worker and the executors the worker starts bind to loopback only.
export SPARK_LOCAL_IP=127.0.0.1

usage() {
    echo "usage: deploy/standalone.sh start|stop [STATE_DIR]" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
ACTION="$1"
STATE="${2:-$ROOT/.recspark/cluster}"
WAIT="${RECSPARK_CLUSTER_WAIT:-180}"

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until the master's JSON status (web UI on port $1) shows at least $2 alive workers; give
# up early when a daemon (pids $3...) has died.
wait_for_workers() {
    "$PYTHON" - "$WAIT" "$@" <<'PY'
import json
import os
import sys
import time
import urllib.request

wait, port, wanted, *pids = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:])
deadline = time.monotonic() + wait
while True:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(f"a cluster daemon (pid {pid}) exited: see its log")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/", timeout=5) as response:
            status = json.load(response)
        if status.get("status") == "ALIVE" and status.get("aliveworkers", 0) >= wanted:
            sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"the master on 127.0.0.1 has no {wanted} alive worker(s) after {wait:.0f} s")
    time.sleep(1)
PY
}

running() {
    [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null
}

stop_daemon() {
    local name="$1" pid
    [[ -f "$STATE/$name.pid" ]] || return 0
    pid="$(cat "$STATE/$name.pid")"
    # Each daemon leads its own process group (setsid): the group holds its JVM and, for the
    # worker, the executors it started.
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$STATE/$name.pid"
    echo "standalone: $name stopped" >&2
}

start() {
    if running master && running worker && [[ -f "$STATE/master-url" ]]; then
        echo "standalone: already running" >&2
        cat "$STATE/master-url"
        return 0
    fi
    stop_daemon worker
    stop_daemon master
    mkdir -p "$STATE/logs" "$STATE/work"
    local port ui worker_ui
    port="$(free_port)"
    ui="$(free_port)"
    worker_ui="$(free_port)"
    setsid "$SPARK_CLASS" org.apache.spark.deploy.master.Master \
        --host 127.0.0.1 --port "$port" --webui-port "$ui" \
        >"$STATE/logs/master.log" 2>&1 </dev/null &
    echo $! >"$STATE/master.pid"
    setsid "$SPARK_CLASS" org.apache.spark.deploy.worker.Worker \
        --host 127.0.0.1 --webui-port "$worker_ui" \
        --cores "${RECSPARK_WORKER_CORES:-2}" --memory "${RECSPARK_WORKER_MEMORY:-4g}" \
        --work-dir "$STATE/work" "spark://127.0.0.1:$port" \
        >"$STATE/logs/worker.log" 2>&1 </dev/null &
    echo $! >"$STATE/worker.pid"
    if ! wait_for_workers "$ui" 1 "$(cat "$STATE/master.pid")" "$(cat "$STATE/worker.pid")"; then
        tail -n 20 "$STATE/logs/master.log" "$STATE/logs/worker.log" >&2 || true
        stop_daemon worker
        stop_daemon master
        exit 1
    fi
    echo "spark://127.0.0.1:$port" >"$STATE/master-url"
    echo "standalone: master spark://127.0.0.1:$port (web UI http://127.0.0.1:$ui), one worker" >&2
    cat "$STATE/master-url"
}

case "$ACTION" in
    start) start ;;
    stop)
        stop_daemon worker
        stop_daemon master
        rm -f "$STATE/master-url"
        ;;
    *) usage ;;
esac
