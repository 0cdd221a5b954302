"""spark-submit entry point: recompute the serving table from the champion model.

Usage: spark-submit --packages $(python -m recspark.packages | paste -sd,) --py-files recspark.zip \
    jobs/refresh_recommendations.py --conf conf/cluster.yaml [--set key=value ...]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["recommend", *sys.argv[1:]]))
