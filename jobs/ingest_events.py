"""spark-submit entry point: the streaming ingestion query (add --once for scheduled runs).

Usage: spark-submit --packages $(python -m recspark.packages | paste -sd,) --py-files recspark.zip \
    jobs/ingest_events.py --conf conf/cluster.yaml [--set key=value ...]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
