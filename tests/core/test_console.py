"""The terminal shows recspark's lines and errors; library chatter and the JVM's output go to the
job's log file under the lake; both are redacted."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from recspark.core.console import (
    DETAIL,
    Progress,
    divert_library_output,
    keep_terminal_for_people,
    log_file_for,
    printed_to_log,
    setup_logging,
)

SECRET_URI = "http://bob:s3cret@127.0.0.1:9/"


def test_the_log_file_lives_under_a_local_lake_only(tmp_path: Path) -> None:
    assert log_file_for(str(tmp_path / "lake"), "train") == tmp_path / "lake" / "_logs" / "train.log"
    assert log_file_for(f"file://{tmp_path}/lake", "ingest") == tmp_path / "lake" / "_logs" / "ingest.log"
    assert log_file_for("s3a://shop/lake", "train") is None
    assert log_file_for("abfss://c@a.dfs.core.windows.net/lake", "train") is None


def test_library_chatter_goes_to_the_log_file_and_recspark_stays_on_the_terminal(
    restored_logging: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    setup_logging("train")
    path = keep_terminal_for_people("train", str(tmp_path / "lake"))
    assert path == tmp_path / "lake" / "_logs" / "train.log"
    logging.getLogger("great_expectations").info("before the session: still here")
    assert not (tmp_path / "lake").exists()  # nothing made before the session starts
    assert divert_library_output() == path  # what build_spark calls before it starts the JVM
    logging.getLogger("recspark.model").info("trial 3 of 12 done")
    logging.getLogger("great_expectations.core").info("Calculating metrics")
    logging.getLogger("mlflow.tracking").warning("MLflow says %s", SECRET_URI)
    logging.getLogger("py4j.clientserver").error("gateway lost")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's FutureWarning", FutureWarning, stacklevel=1)
    logging.getLogger().handlers[0].flush()

    terminal = capsys.readouterr().err
    logged = path.read_text()
    assert "trial 3 of 12 done" in terminal and "gateway lost" in terminal
    assert "before the session: still here" in terminal
    assert f"library and Spark logs: {path}" in terminal
    for chatter in ("Calculating metrics", "MLflow says", "FutureWarning"):
        assert chatter not in terminal
        assert chatter in logged
    assert "trial 3 of 12 done" in logged and "gateway lost" in logged
    assert "s3cret" not in logged and "MLflow says http://***@127.0.0.1:9/" in logged


def test_detail_lines_and_what_a_library_prints_go_to_the_log_file_only(
    restored_logging: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A tuning trial, a registration MLflow prints: the file keeps them, the terminal shows the
    periodic count and a detail line's warnings."""
    setup_logging("train")
    path = keep_terminal_for_people("train", str(tmp_path / "lake"))
    divert_library_output()
    log = logging.getLogger("recspark.model.tuning")
    progress = Progress(log, every_seconds=0)
    for trial in (1, 2):
        log.info("tune: trial %d -> ndcg 0.3", trial, extra=DETAIL)
        progress.tick(f"tune: {trial} trials so far")
    log.warning("tune: trial 3 failed", extra=DETAIL)
    with printed_to_log(log):
        print("Successfully registered model 'shop'.")
        sys.stderr.write("Created version '1' of model 'shop'.\nno newline")
    logging.getLogger().handlers[0].flush()

    terminal = capsys.readouterr()
    logged = path.read_text()
    detail = ("trial 1 -> ndcg", "trial 2 -> ndcg", "Successfully registered", "Created version", "newline")
    for line in detail:
        assert line in logged
        assert line not in terminal.out + terminal.err
    for line in ("tune: 1 trials so far", "tune: 2 trials so far", "tune: trial 3 failed"):
        assert line in terminal.err


def test_progress_logs_at_most_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(logging.getLogger("recspark.test"), every_seconds=3600)
    with caplog.at_level(logging.INFO, logger="recspark.test"):
        for step in range(100):
            progress.tick(f"{step} steps")
        progress.last -= 3600  # an hour later
        progress.tick("100 steps")
        progress.tick("101 steps")
    assert [r.getMessage() for r in caplog.records] == ["100 steps"]


def test_without_a_local_lake_the_terminal_keeps_everything(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("train")
    assert keep_terminal_for_people("train", "s3a://shop/lake") is None
    assert divert_library_output() is None
    logging.getLogger("great_expectations.core").info("Calculating metrics")
    assert "Calculating metrics" in capsys.readouterr().err


# A job's process: the JVM (started by the one session builder after the terminal was kept for
# people) logs a line with a secret, and recspark logs one.
JVM_SCRIPT = """\
import logging
import sys
from pathlib import Path

from recspark.core.config import load_config
from recspark.core.console import keep_terminal_for_people, setup_logging
from recspark.core.session import build_spark

root = Path(sys.argv[1])
config = load_config(
    None,
    ["spark.master=local[1]", "spark.driver_memory=1g", "spark.conf.spark.ui.enabled=false",
     f"lake.root={root / 'lake'}"],
    environ={},
)
setup_logging("train")
keep_terminal_for_people("train", config.lake.root)
spark = build_spark(config, "console")
jvm = spark.sparkContext._jvm
log4j = jvm.org.apache.logging.log4j.LogManager
log4j.getLogger("recspark.console").warn("JVM line: store at " + sys.argv[2])
print("a print after the JVM started")
logging.getLogger("recspark.console").info("fitting 2 of 3")
spark.stop()
"""


def test_the_jvm_a_job_starts_writes_to_the_log_file(tmp_path: Path) -> None:
    """Without ``-v`` (tests/core/test_secrets.py shows the JVM's lines on the terminal with it)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JVM_SCRIPT), str(tmp_path), SECRET_URI],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log_file = tmp_path / "lake" / "_logs" / "train.log"
    assert "a print after the JVM started" in done.stdout  # the process's own streams are back
    assert "fitting 2 of 3" in done.stderr
    assert "JVM line" not in done.stderr and "JVM line" not in done.stdout
    assert "JVM line: store at http://***@127.0.0.1:9/" in log_file.read_text()
    assert "s3cret" not in log_file.read_text()
