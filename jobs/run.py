"""spark-submit entry point of every recspark job: ``jobs/run.py JOB [job arguments]``.

Usage: spark-submit --packages $(python -m recspark.packages | paste -sd,) --py-files recspark.zip \
    jobs/run.py JOB --conf conf/cluster.yaml [--set key=value ...] [--once]

JOB is one of ``python -m recspark.jobs --names`` (the registry, recspark/jobs.py); the rest is
what ``recspark JOB`` takes. deploy/submit.sh builds this command.
"""

import sys

from recspark.cli import main
from recspark.jobs import UnknownJobError, submitted


def run(argv: list[str]) -> int:
    if not argv:
        print("usage: jobs/run.py JOB [job arguments]", file=sys.stderr)
        return 2
    try:
        job = submitted(argv[0])
    except UnknownJobError as exc:
        print(f"jobs/run.py: {exc}", file=sys.stderr)
        return 2
    return main([job.name, *argv[1:]])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
