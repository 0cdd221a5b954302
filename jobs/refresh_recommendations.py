"""spark-submit entry point: keep the serving table fresh (full refresh when the champion changed;
then only users with new activity). Add --once for scheduled runs.

Usage: spark-submit --packages $(python -m recspark.packages | paste -sd,) --py-files recspark.zip \
    jobs/refresh_recommendations.py --conf conf/cluster.yaml [--set key=value ...]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["refresh", *sys.argv[1:]]))
