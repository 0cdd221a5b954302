"""Credentials never reach what recspark prints: one set of patterns (recspark.core.secrets), applied
to whatever the Python process prints, to the JVM's log4j2 output and, as a filter, to
deploy/submit.sh's output. The job_runs, quality_results and status redaction: tests/ops/test_runs.py.

The processes run for real (no stand-ins): a tracking URI on port 9 of this machine, which refuses
at once, fails MLflow the way a tracking server that is down does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow  # noqa: F401  (configures the logging handler of its own)
import pytest
from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.console import setup_logging
from recspark.core.secrets import SECRET_PATTERNS, log4j2_config_file, log4j2_properties, redact
from recspark.core.streaming import await_query, start_query
from recspark.core.tables import JOB_RUNS, QUALITY_RESULTS, Lake
from recspark.ops.quality.gate import run_gate
from recspark.ops.runs import track_job
from tests.ops.test_quality import CLEAN_EVENTS, EVENT_COLUMNS, frame, gate_config, replaced

ROOT = Path(__file__).resolve().parents[2]
SECRET_URI = "http://bob:s3cret@127.0.0.1:9/?token=t0psekrit"
REDACTED_URI = "http://***@127.0.0.1:9/?token=***"
SECRETS = ("s3cret", "t0psekrit")


def assert_redacted(text: str, *expected: str) -> None:
    """No secret in ``text``, and each ``expected`` (redacted) piece is: the line was printed."""
    leaked = [line for line in text.splitlines() if any(s in line for s in SECRETS)]
    assert not leaked, leaked[:5]
    for piece in expected:
        assert piece in text


def child_env(**extra: str) -> dict[str, str]:
    """This environment without what would steer a child's Spark (the test session's own log4j2
    setting, a gateway of this process), with MLflow failing at once instead of retrying."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECSPARK_", "SPARK_", "PYSPARK_", "LOG4J_")) and k != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=str(ROOT), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5", **extra
    )
    return env


def run_python(cwd: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------- the patterns


def test_redact_hides_user_info_and_secret_parameters_and_changes_nothing_twice() -> None:
    cases = {
        SECRET_URI: REDACTED_URI,
        "s3a://AKIA:wJal@bucket/lake": "s3a://***@bucket/lake",
        "password=hunter2; api_key=k1&x=1": "password=***; api_key=***&x=1",
        "MAX_TOKEN=5 and tokenizer=x": "MAX_TOKEN=5 and tokenizer=x",
        "http://host/path?x=1": "http://host/path?x=1",
        '{"uri": "http://***@h/?token=***", "n": 1}': '{"uri": "http://***@h/?token=***", "n": 1}',
    }
    for text, expected in cases.items():
        assert redact(text) == expected
        assert redact(redact(text)) == expected


def test_python_and_java_read_the_patterns_alike(spark: SparkSession) -> None:
    """The log4j2 layout applies the patterns with java.util.regex: on every text below, each
    pattern must change exactly what Python's re changes (Unicode spaces and letters included,
    where \\s, \\b and case folding differ between the two)."""
    corpus = [
        SECRET_URI,
        "s3a://AKIA:wJal@bucket/x and gs://u@b",
        "x token=abc;y password=p&q KEY=v Token=W",
        "MAX_TOKEN=5 étoken=1 ÉTOKEN=2 \u212aey=3 key=\u00e9t\u00e9",
        "a\u00a0token=3\u00a0z http://u\u00a0p@h h://u\u2028p@h",
        "1http://u:p@h -http://u:p@h",
        'token=*** token=***x token=***"',
        "api_key=x\tsecret_key=y\x0bpwd=z\x0cpasswd=w\rtoken=q\nkey=r",
        "",
    ]
    jvm = spark.sparkContext._jvm
    for pattern in SECRET_PATTERNS:
        java = jvm.java.util.regex.Pattern.compile(pattern.regex)
        for text in corpus:
            python = pattern.python().sub(pattern.python_replacement(), text)
            assert java.matcher(text).replaceAll(pattern.java_replacement()) == python, (pattern.regex, text)


def test_the_filter_redacts_line_by_line_and_passes_other_bytes_through(tmp_path: Path) -> None:
    raw = f"one {SECRET_URI}\n".encode() + b"latin-1 \xe9 token=abc\n" + b"no newline password=x"
    done = subprocess.run(
        [sys.executable, "-m", "recspark.core.secrets"],
        input=raw,
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = f"one {REDACTED_URI}\n".encode() + b"latin-1 \xe9 token=***\nno newline password=***"
    assert done.stdout == expected


# --------------------------------------------------------------------------- what is stored


def test_job_runs_and_quality_results_store_text_redacted(spark: SparkSession, config: Config) -> None:
    """A failed run's error (a streaming query's failure quotes its whole Python traceback) and a
    gate's failures (they quote the offending values) are stored redacted; ``status`` redacts
    again when it reads (tests/ops/test_runs.py)."""
    config = gate_config(config, "quality.on_failure.events=warn")
    lake = Lake.at(config.lake.root)
    with pytest.raises(RuntimeError), track_job(lambda: spark, lake, "refresh"):
        raise RuntimeError(f"refresh query failed: {SECRET_URI}\nTraceback ... {SECRET_URI}")
    bad = frame(spark, replaced(CLEAN_EVENTS, 0, 4, f"view {SECRET_URI}"), EVENT_COLUMNS)
    run_gate(spark, config, lake, "events", bad, job="ingest")

    error = lake.read(spark, JOB_RUNS).first()["error"]
    assert error == f"RuntimeError: refresh query failed: {REDACTED_URI}"
    failures = lake.read(spark, QUALITY_RESULTS).first()["failures"]
    assert_redacted(failures, f"(e.g. 'view {REDACTED_URI}")


def test_a_failure_inside_foreach_batch_raises_and_is_stored_redacted(
    spark: SparkSession, config: Config, tmp_path: Path
) -> None:
    """A batch function's error travels through py4j into the StreamingQueryException's message
    (the whole Python traceback): the job's error, and its ``job_runs`` row, hold no secret."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x\n")

    def failing_batch(batch: object, batch_id: int) -> None:
        raise ConnectionError(f"cannot reach {SECRET_URI}")

    stream = (
        spark.readStream.format("text")
        .load(str(tmp_path / "in"))
        .writeStream.option("checkpointLocation", str(tmp_path / "checkpoint"))
        .foreachBatch(failing_batch)
    )
    lake = Lake.at(config.lake.root)
    with pytest.raises(RuntimeError) as failure, track_job(lambda: spark, lake, "refresh"):
        await_query(start_query(stream, True, 1), "refresh")
    assert_redacted(
        str(failure.value), "refresh query failed", f"ConnectionError: cannot reach {REDACTED_URI}"
    )
    assert_redacted(lake.read(spark, JOB_RUNS).first()["error"], "RuntimeError: refresh query failed")


# --------------------------------------------------------------------------- the Python process


def test_everything_the_cli_prints_is_redacted(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Log lines, MLflow's (through a handler of its own, not the root's), plain prints (MLflow
    prints its run links) and lines written in pieces."""
    assert logging.getLogger("mlflow").handlers and not logging.getLogger("mlflow").propagate
    setup_logging("train")
    logging.getLogger("recspark.anything").info("tracking store at %s", SECRET_URI)
    logging.getLogger("mlflow.tracking").warning("MLflow says %s", SECRET_URI)
    print(f"View run at: {SECRET_URI}")
    sys.stderr.write("piece http://bob:s3")
    sys.stderr.write("cret@127.0.0.1:9/?token=t0psekrit\n")
    sys.stderr.write("no newline password=t0psekrit")
    sys.stderr.flush()

    captured = capsys.readouterr()
    assert_redacted(captured.out, f"View run at: {REDACTED_URI}")
    assert_redacted(
        captured.err,
        f"tracking store at {REDACTED_URI}",
        f"MLflow says {REDACTED_URI}",
        f"piece {REDACTED_URI}",
        "no newline password=***",
    )


def test_a_usage_error_does_not_echo_credentials(tmp_path: Path) -> None:
    """``recspark train mlflow.tracking_uri=...`` (``--set`` forgotten): argparse quotes it."""
    done = run_python(tmp_path, "-m", "recspark.cli", "train", f"mlflow.tracking_uri={SECRET_URI}")
    assert done.returncode == 2
    assert_redacted(done.stderr, f"unrecognized arguments: mlflow.tracking_uri={REDACTED_URI}")


def test_an_mlflow_error_nobody_catches_prints_a_redacted_traceback(tmp_path: Path) -> None:
    """MLflow's errors quote the tracking URL with its user-info; one raised outside the registry's
    wrappers (``mlflow.start_run`` in a training run) reaches the interpreter's traceback printer."""
    script = textwrap.dedent(
        f"""\
        import mlflow

        from recspark.core.console import setup_logging

        setup_logging("train")
        mlflow.set_tracking_uri({SECRET_URI!r})
        mlflow.start_run()
        """
    )
    done = run_python(tmp_path, "-c", script)
    assert done.returncode == 1
    assert_redacted(done.stderr, "Traceback (most recent call last)", "MlflowException", "127.0.0.1:9")


# --------------------------------------------------------------------------- a job with Spark

# A job's process: a line logged by the JVM (with a stack trace), then a streaming query whose
# foreachBatch looks up the champion as a refresh batch does, against a registry that is down.
# The failure travels through py4j (the Python traceback, causes included, becomes the
# StreamingQueryException's message), is logged by the JVM and raised by await_query, uncaught.
JOB_SCRIPT = """\
import sys
from pathlib import Path

import mlflow

from recspark.core.console import setup_logging
from recspark.core.config import load_config
from recspark.core.registry import alias_version
from recspark.core.session import build_spark
from recspark.core.streaming import await_query, start_query

root = Path(sys.argv[1])
config = load_config(
    None,
    [
        "spark.master=local[1]",
        "spark.driver_memory=1g",
        "spark.shuffle_partitions=1",
        "spark.conf.spark.ui.enabled=false",
        f"lake.root={root / 'lake'}",
        f"mlflow.tracking_uri={sys.argv[2]}",
    ],
    environ={},
)
setup_logging("refresh")
spark = build_spark(config, "secrets")
jvm = spark.sparkContext._jvm
jvm.org.apache.logging.log4j.LogManager.getLogger("recspark.secrets").warn(
    "JVM line: store at " + sys.argv[2], jvm.java.lang.IllegalStateException("JVM cause: " + sys.argv[2])
)
(root / "in").mkdir()
(root / "in" / "a.txt").write_text("x\\n")
mlflow.set_tracking_uri(sys.argv[2])  # configure_mlflow did, when the registry was still up


def refresh_batch(batch, batch_id):
    alias_version(config.mlflow, "champion")


stream = (
    spark.readStream.format("text")
    .load(str(root / "in"))
    .writeStream.option("checkpointLocation", str(root / "checkpoint"))
    .foreachBatch(refresh_batch)
)
await_query(start_query(stream, True, 1), "refresh")
"""


@pytest.fixture(scope="module")
def failed_job(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    root = tmp_path_factory.mktemp("failed_job")
    return run_python(root, "-c", JOB_SCRIPT, str(root), SECRET_URI, timeout=600)


def test_the_jvms_log_lines_are_redacted(failed_job: subprocess.CompletedProcess) -> None:
    assert_redacted(
        failed_job.stderr,
        f"WARN secrets: JVM line: store at {REDACTED_URI}",
        f"java.lang.IllegalStateException: JVM cause: {REDACTED_URI}",
    )


def test_a_failure_inside_foreach_batch_is_printed_redacted(failed_job: subprocess.CompletedProcess) -> None:
    assert failed_job.returncode == 1
    assert_redacted(
        failed_job.stderr,
        "RuntimeError: refresh query failed",
        f"RegistryUnreachableError: model registry at {REDACTED_URI}",  # a TrackingError
        "MlflowException",
    )


def test_the_session_logs_through_the_redacting_configuration(spark: SparkSession) -> None:
    """The driver JVM read the file (the executors of a cluster are told the same)."""
    jvm = spark.sparkContext._jvm
    source = jvm.org.apache.logging.log4j.LogManager.getContext(False).getConfiguration()
    assert source.getConfigurationSource().getLocation() == str(log4j2_config_file())
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.executorEnv.LOG4J_CONFIGURATION_FILE") == str(log4j2_config_file())


def test_the_log4j2_file_holds_the_one_configuration() -> None:
    path = log4j2_config_file()
    assert path.read_text() == log4j2_properties()
    assert path == log4j2_config_file()
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
    for pattern in SECRET_PATTERNS:  # as a properties file spells it: backslashes doubled
        assert pattern.regex.replace("\\", "\\\\") in path.read_text()
