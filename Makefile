# The README's two commands: `make demo` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install jars demo cluster-demo test test-fast test-soak test-random lint clean zip airflow-venv

# What ruff checks and formats; mypy's files are in pyproject.toml ([tool.mypy]).
PY_DIRS := recspark jobs tests bench deploy
# The test tiers (markers in pyproject.toml): test-fast leaves out what starts a broker, a
# cluster, Airflow or a notebook kernel, and the tests marked slow (over 20 s each). The soak
# (three simulated shop days, about 16 minutes) runs on its own: CI's 90 minutes have no room
# for it beside the rest of the suite yet.
FAST_TIER := not kafka and not cluster and not airflow and not notebooks and not slow and not soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/python -m recspark.packages --fetch --kafka
	touch $(STAMP)

install: $(STAMP)

# Re-resolve the Spark packages (Delta, and Kafka for the Kafka source) into the local caches.
jars: $(STAMP)
	$(BIN)/python -m recspark.packages --fetch --kafka
	$(BIN)/python -m tests.kafka_broker --fetch

demo: install
	$(BIN)/recspark demo --fresh --conf conf/local.yaml

# The same pipeline on a Spark standalone cluster on this machine (master and worker on
# 127.0.0.1, the jobs through deploy/submit.sh): see deploy/cluster-demo.sh.
cluster-demo: install
	deploy/cluster-demo.sh

# Tests run in $(WORKERS) processes (pytest-xdist), each with its own Spark session, taking whole
# test files; WORKERS=0 runs them in this process. The fast tier's small in-process tests leave
# a core idle while the driver plans, so two workers gain there. The full suite runs in one:
# its streams, clusters and Airflow runs use both cores on their own, two workers slowed each
# test about twofold (CI, fdce8ac) and every worker built the session-wide shops again.
WORKERS ?= 2
PARALLEL = -n $(WORKERS) --dist loadfile

# Everything but the soak: the static checks, then every other test tier.
test: WORKERS = 0
test: lint
	$(BIN)/python -m pytest -q -p no:randomly $(PARALLEL) -m "not soak" --durations=25

# Three simulated shop days of bench/soak.py, every invariant checked each day.
test-soak: install
	$(BIN)/python -m pytest -q -p no:randomly -n 0 -m soak --durations=5

# The static checks and the pure and small-Spark tests (see FAST_TIER).
test-fast: lint
	$(BIN)/python -m pytest -q -p no:randomly $(PARALLEL) -m "$(FAST_TIER)" --durations=15

# The same suite in a random order (pytest-randomly): tests must not depend on each other's
# order. The seed is printed first (pytest -q hides pytest-randomly's own header);
# `make test-random SEED=N` replays that order.
ifndef SEED
SEED := $(shell date +%s)
endif
test-random: lint
	@echo "test-random: SEED=$(SEED)"
	$(BIN)/python -m pytest -q -p randomly --randomly-seed=$(SEED) $(PARALLEL) -m "not soak" --durations=25

# ruff (lint and format), mypy (strict on recspark/core) and the import contract of the stage
# packages (pyproject.toml: [tool.ruff], [tool.mypy], [tool.importlinter]).
lint: install
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy
	$(BIN)/lint-imports

# The code artifact spark-submit ships with --py-files (deploy/submit.sh builds it too).
zip:
	deploy/build-zip.sh

# A separate virtualenv with the Airflow version the DAGs are tested with.
airflow-venv: deploy/airflow/requirements.txt
	$(PYTHON) -m venv .venv-airflow
	.venv-airflow/bin/pip install --quiet -r deploy/airflow/requirements.txt

clean:
	rm -rf .recspark spark-warehouse metastore_db derby.log
