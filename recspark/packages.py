"""The JVM packages recspark needs, pinned in one place.

Spark resolves these Maven coordinates itself (``spark.jars.packages``); its resolver looks in
the local Maven repository first, which is where ``make install`` pre-fetches them.
Run ``python -m recspark.packages`` to print them one per line (the Makefile and
``deploy/submit.sh`` read that output, so nothing else repeats the versions).
"""

from __future__ import annotations

import re
import subprocess
import sys

SPARK_VERSION = "4.2.0"
SCALA_BINARY = "2.13"
# The pip package delta-spark and the jar must be the same release; 4.4.0 is the newest one
# published for Spark 4.2 (pyproject.toml pins delta-spark==4.4.0 to match).
DELTA_VERSION = "4.4.0"

DELTA_PACKAGE = f"io.delta:delta-spark_4.2_{SCALA_BINARY}:{DELTA_VERSION}"
KAFKA_PACKAGE = f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{SPARK_VERSION}"


def spark_packages(kafka: bool = False) -> list[str]:
    """Maven coordinates a recspark session needs; Kafka only when the ingest source is Kafka."""
    return [DELTA_PACKAGE, KAFKA_PACKAGE] if kafka else [DELTA_PACKAGE]


_PROBE = (
    "import sys; from pyspark.sql import SparkSession; "
    "SparkSession.builder.master('local[1]').config('spark.jars.packages', sys.argv[1])"
    ".config('spark.ui.enabled', 'false').getOrCreate().stop()"
)
_FAILED_DOWNLOAD = re.compile(r"download failed: ([^#\s]+)#([^;\s]+);([^!\s]+)!")
_UNRESOLVED = re.compile(r"unresolved dependency: ([^#\s]+)#([^;\s]+);([^:\s]+): not found")


def fetch(packages: list[str], attempts: int = 6) -> None:
    """Make the packages resolvable offline: let Spark's resolver fetch them, and where it cannot
    (no route to the repository, or a local Maven repository holding a POM without its jar),
    fetch exactly what it missed with ``mvn dependency:get`` and try again."""
    for attempt in range(1, attempts + 1):
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, ",".join(packages)], capture_output=True, text=True
        )
        if probe.returncode == 0:
            print(f"spark packages resolved: {', '.join(packages)}")
            return
        output = probe.stdout + probe.stderr
        missing = sorted(set(_FAILED_DOWNLOAD.findall(output)))
        transitive = "false"
        if not missing:
            missing = sorted(set(_UNRESOLVED.findall(output)))
            transitive = "true"
        if not missing:
            raise SystemExit("could not resolve Spark packages:\n" + output[-3000:])
        print(f"attempt {attempt}: fetching {len(missing)} artifact(s) with Maven")
        for group, artifact, version in missing:
            subprocess.run(
                [
                    "mvn",
                    "-q",
                    "-B",
                    "-Dstyle.color=never",
                    "dependency:get",
                    f"-Dartifact={group}:{artifact}:{version}",
                    f"-Dtransitive={transitive}",
                ],
                check=True,
            )
    raise SystemExit(f"Spark packages still unresolved after {attempts} attempts")


if __name__ == "__main__":
    wanted = spark_packages(kafka="--kafka" in sys.argv[1:])
    if "--fetch" in sys.argv[1:]:
        fetch(wanted)
    else:
        sys.stdout.write("\n".join(wanted) + "\n")
