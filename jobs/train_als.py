"""spark-submit entry point: retrain ALS, evaluate it, log to MLflow, promote it if it earns it.

Usage: spark-submit --packages $(python -m recspark.packages | paste -sd,) --py-files recspark.zip \
    jobs/train_als.py --conf conf/cluster.yaml [--set key=value ...]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
