# The README's two commands: `make demo` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install jars demo cluster-demo test test-random lint clean zip airflow-venv

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

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:randomly --durations=25

# The same suite in a random order (pytest-randomly): tests must not depend on each other's
# order. The seed is printed first (pytest -q hides pytest-randomly's own header);
# `make test-random SEED=N` replays that order.
ifndef SEED
SEED := $(shell date +%s)
endif
test-random: install
	@echo "test-random: SEED=$(SEED)"
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p randomly --randomly-seed=$(SEED) --durations=25

# ruff, and the import contract of the stage packages (pyproject.toml, [tool.importlinter]).
lint: install
	$(BIN)/ruff check recspark jobs tests bench deploy
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
