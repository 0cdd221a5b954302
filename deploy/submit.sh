#!/usr/bin/env bash
# Submit one recspark job to Spark:
#
#   deploy/submit.sh JOB [job args...]
#   deploy/submit.sh ingest --conf conf/cluster.yaml --once
#   SPARK_MASTER=local[2] deploy/submit.sh train --conf conf/local.yaml --set train.rank=16
#
# JOB is a job of the registry (recspark/jobs.py) that runs on Spark: ingest, train, refresh,
# recommend, maintain, check, ... (`python -m recspark.jobs --names`, or `deploy/submit.sh -h`).
# The former names ingest_events, train_als and refresh_recommendations still work, with a
# notice. Job arguments are passed through unchanged; relative paths in them are relative to
# the directory you call this script from (that is where the driver runs in client mode).
#
# What it does, every call (it takes well under a second):
#   1. builds build/recspark.zip from the recspark/ package (deploy/build-zip.sh);
#   2. reads the job's config for its master (see SPARK_MASTER) and ingest source;
#   3. reads the Maven coordinates from `python -m recspark.packages`, so the Delta (and
#      Kafka) versions are written down in recspark/packages.py only. Kafka's connector is
#      added (`--kafka`) only when the job's config says ingest.source: kafka — the same rule
#      the session builder uses; RECSPARK_KAFKA=1 / RECSPARK_KAFKA=0 forces it either way;
#   4. runs spark-submit [--master ...] --packages ... --py-files build/recspark.zip jobs/run.py JOB ARGS.
#
# Environment:
#   VENV               the project's virtualenv (default: <repo>/.venv); its python reads the
#                      package list and config, and its spark-submit (pyspark's) is used
#                      unless SPARK_HOME is set
#   SPARK_HOME         use $SPARK_HOME/bin/spark-submit (a cluster's Spark distribution)
#   SPARK_MASTER       passed as --master; if unset, the config's spark.master is passed
#                      (local[2] in conf/local.yaml); if that is null too (conf/cluster.yaml),
#                      the cluster's spark-defaults.conf decides
#   PYSPARK_PYTHON     passed as --conf spark.pyspark.python=... (the executors' python)
#   RECSPARK_ARCHIVES  passed as --archives, e.g. "env.tar.gz#environment" (see below)
#   RECSPARK_SUBMIT_OPTS  further spark-submit options, split on spaces,
#                      e.g. "--deploy-mode cluster --driver-memory 4g --executor-memory 8g"
#   RECSPARK_KAFKA     auto (default) | 1 | 0: add the Kafka connector package
#   RECSPARK_DRY_RUN=1 print the spark-submit command instead of running it
#
# Credentials never reach its output: the command it prints (the dry run, and the line logged
# before running it) and everything spark-submit, the JVM and the job print pass through
# `python -m recspark.core.secrets`, the redaction recspark applies everywhere (scheme://***@host,
# ?token=***). The driver logs through the redacting log4j2 configuration that
# `python -m recspark.core.secrets --log4j2-file` writes (LOG4J_CONFIGURATION_FILE), and so do
# the executors (see deploy/README.md for workers that do not share this host's filesystem).
#
# How third-party Python packages (numpy, pandas, pyarrow, mlflow, great-expectations, ...)
# reach the executors: the zip carries recspark's own code only. Either
#   a) the cluster's image already has them (a Docker image for Kubernetes, a bootstrap
#      action on EMR/Dataproc): nothing to pass; or
#   b) ship a packed virtualenv with the job:
#        python -m venv env && env/bin/pip install . venv-pack && env/bin/venv-pack -o env.tar.gz
#        RECSPARK_ARCHIVES='env.tar.gz#environment' PYSPARK_PYTHON=./environment/bin/python \
#            deploy/submit.sh train --conf conf/cluster.yaml
#      YARN and Kubernetes unpack the archive into each container's working directory as
#      ./environment, and spark.pyspark.python points the Python workers at it.
# See deploy/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
if [[ -x "$VENV/bin/python" ]]; then
    PYTHON="$VENV/bin/python"
else
    PYTHON="$(command -v python3)"
fi

# Credentials out of stdin, line by line: recspark's one redaction (recspark/core/secrets.py).
redact() {
    PYTHONPATH="$ROOT" "$PYTHON" -m recspark.core.secrets
}

# The job registry (recspark/jobs.py), read with the standard library only.
jobs() { (cd "$ROOT" && "$PYTHON" -m recspark.jobs "$@"); }

usage() {
    {
        echo "usage: deploy/submit.sh JOB [job args...]"
        echo
        echo "JOB is one of (recspark/jobs.py):"
        jobs --usage
        echo
        echo "example: SPARK_MASTER=local[2] deploy/submit.sh ingest --conf conf/local.yaml --once"
    } >&2
    exit "${1:-2}"
}

[[ $# -ge 1 ]] || usage 2
case "$1" in -h | --help) usage 0 ;; esac
# The registry's name for it (a former name is accepted with a notice); unknown: usage.
JOB="$(jobs --resolve "$1")" || usage 2
shift
if [[ -n "${SPARK_HOME:-}" ]]; then
    SPARK_SUBMIT="$SPARK_HOME/bin/spark-submit"
else
    SPARK_SUBMIT="$VENV/bin/spark-submit"
    # pyspark's own launcher starts the driver with `python3` from PATH unless told otherwise;
    # the driver needs the virtualenv that has recspark's dependencies.
    if [[ -z "${PYSPARK_DRIVER_PYTHON:-}" && -x "$VENV/bin/python" ]]; then
        export PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
    fi
fi
if [[ ! -x "$SPARK_SUBMIT" && -z "${RECSPARK_DRY_RUN:-}" ]]; then
    echo "deploy/submit.sh: $SPARK_SUBMIT not found (run \`make install\`, or set SPARK_HOME)" >&2
    exit 2
fi

# 1. The artifact.
ZIP="$("$ROOT/deploy/build-zip.sh" "$ROOT/build/recspark.zip")"

# 2. What the job's config says about the submission: its ingest source (the Kafka connector
#    is added only for ingest.source=kafka, the same rule as recspark.core.session.build_spark) and
#    its spark.master (the --master unless SPARK_MASTER is set). --conf/--set/RECSPARK__* are
#    read the way the job reads them; if the config cannot be read, the job itself will say
#    why, so assume files and no master here.
read -r source_kind config_master < <(
    "$PYTHON" - "$ROOT" "$@" 2>/dev/null <<'PY' || echo "files -"
import argparse
import sys

sys.path.insert(0, sys.argv[1])
from recspark.cli import add_config_arguments, config_from_args

parser = argparse.ArgumentParser(add_help=False)
add_config_arguments(parser)
args, _ = parser.parse_known_args(sys.argv[2:])
config = config_from_args(args)
print(config.ingest.source, config.spark.master or "-")
PY
)
kafka="${RECSPARK_KAFKA:-auto}"
if [[ "$kafka" == "auto" ]]; then
    [[ "$source_kind" == "kafka" ]] && kafka=1 || kafka=0
fi
master="${SPARK_MASTER:-}"
[[ -z "$master" && "$config_master" != "-" ]] && master="$config_master"

# 3. The Maven packages, from recspark/packages.py (the one place that names versions).
package_args=()
[[ "$kafka" == "1" ]] && package_args+=(--kafka)
PACKAGES="$(cd "$ROOT" && "$PYTHON" -m recspark.packages "${package_args[@]}" | paste -sd, -)"
if [[ -z "$PACKAGES" ]]; then
    echo "deploy/submit.sh: python -m recspark.packages printed nothing" >&2
    exit 2
fi

# 4. spark-submit.
# The driver JVM (a child of spark-submit, started before any recspark code runs) logs through
# the redacting log4j2 configuration, named by log4j2's environment variable; the session builder
# names it for the executors.
LOG4J_CONFIGURATION_FILE="$(PYTHONPATH="$ROOT" "$PYTHON" -m recspark.core.secrets --log4j2-file)"
export LOG4J_CONFIGURATION_FILE
cmd=("$SPARK_SUBMIT" --packages "$PACKAGES" --py-files "$ZIP")
[[ -n "$master" ]] && cmd+=(--master "$master")
[[ -n "${PYSPARK_PYTHON:-}" ]] && cmd+=(--conf "spark.pyspark.python=$PYSPARK_PYTHON")
[[ -n "${RECSPARK_ARCHIVES:-}" ]] && cmd+=(--archives "$RECSPARK_ARCHIVES")
if [[ -n "${RECSPARK_SUBMIT_OPTS:-}" ]]; then
    read -r -a extra <<<"$RECSPARK_SUBMIT_OPTS"
    cmd+=("${extra[@]}")
fi
cmd+=("$ROOT/jobs/run.py" "$JOB" "$@")

if [[ -n "${RECSPARK_DRY_RUN:-}" ]]; then
    { printf '%q ' "${cmd[@]}"; printf '\n'; } | redact
    exit 0
fi
echo "deploy/submit.sh: $(printf '%q ' "${cmd[@]}" | redact)" >&2
# From here on this script's stdout and stderr (so spark-submit's, the JVM's and the job's) go
# through the redactor; exec keeps spark-submit's process id and exit status for the caller.
exec > >(redact) 2> >(redact >&2)
exec "${cmd[@]}"
