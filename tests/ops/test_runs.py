"""Job-run history and the status report: every tracked job leaves a row, failures keep their
error, and the report shows tables, the (absent) champion and the latest runs."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import pytest
from chispa import assert_df_equality
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from recspark.cli import main
from recspark.core.config import Config
from recspark.core.console import setup_logging
from recspark.core.gates import no_gate
from recspark.core.registry import champion_move, configure_mlflow, move_alias
from recspark.core.tables import (
    ALL_TABLES,
    INTERACTIONS,
    INTERACTIONS_SCHEMA,
    JOB_RUNS,
    QUALITY_RESULTS,
    Lake,
)
from recspark.jobs import Job, Outcome, run_job
from recspark.model.training.train import TrainResult, train
from recspark.ops.quality.result import QualityGateError
from recspark.ops.runs import JobRun, active_spark, error_text, record_job_run, track_job
from recspark.ops.status.json_report import status_json
from recspark.ops.status.snapshot import gather_status
from recspark.ops.status.text_report import format_age, format_duration, render_status, status_report
from tests.conftest import copy_shop

RESULT_COLUMNS = "job string, status string, rows_in long, rows_out long, model_version string, error string"


def job_runs(spark: SparkSession, lake: Lake) -> DataFrame:
    return spark.read.format("delta").load(lake.path(JOB_RUNS.name))


def lake_of(config: Config) -> Lake:
    return Lake.at(config.lake.root)


def test_track_job_records_a_succeeded_run(spark: SparkSession, config: Config) -> None:
    lake = lake_of(config)

    with track_job(lambda: spark, lake, "train") as run:
        run.rows_in = 120
        run.rows_out = 40
        run.model_version = "3"

    recorded = job_runs(spark, lake)
    expected = spark.createDataFrame([("train", "succeeded", 120, 40, "3", None)], RESULT_COLUMNS)
    assert_df_equality(recorded.select(*expected.columns), expected, ignore_nullable=True)
    row = recorded.first()
    assert row is not None
    assert row["run_id"] == run.run_id
    assert row["started_at"] <= row["ended_at"]


def test_track_job_records_a_failed_run_and_reraises(spark: SparkSession, config: Config) -> None:
    lake = lake_of(config)

    with (
        pytest.raises(ValueError, match="no events yet"),
        track_job(lambda: spark, lake, "ingest") as run,
    ):
        run.rows_in = 7
        raise ValueError("no events yet\nsecond line of a long traceback")

    expected = spark.createDataFrame(
        [("ingest", "failed", 7, None, None, "ValueError: no events yet")], RESULT_COLUMNS
    )
    assert_df_equality(job_runs(spark, lake).select(*expected.columns), expected, ignore_nullable=True)


def test_run_job_records_the_figures_and_gates_only_the_rows_the_run_wrote(
    spark: SparkSession, config: Config
) -> None:
    """A tracked job's figures fill its job_runs row, and it succeeds only once the gates on the
    rows it wrote pass: a bad row of its own fails it, one written before it is not its own."""
    lake = lake_of(config)
    lake.ensure(spark, INTERACTIONS)

    def write_pair(user: str, strength: float, at: datetime) -> None:
        row = (user, "i1", 1, 0, 0, 0, 0, None, at, at, strength, strength, at)
        spark.createDataFrame([row], INTERACTIONS_SCHEMA).write.format("delta").mode("append").save(
            lake.path(INTERACTIONS.name)
        )

    write_pair("earlier", -1.0, datetime.now(timezone.utc) - timedelta(hours=1))  # breaks the suite

    def writes(strength: float) -> Job:
        def run(args: object, config: Config) -> Outcome:
            write_pair(f"u{strength}", strength, datetime.now(timezone.utc))
            return Outcome(rows_in=5, rows_out=1, model_version="7")

        return Job("probe", "writes one pair", run, tracked=True, gates=("interactions",))

    run_job(writes(2.0), writes(2.0).options(), config)
    with pytest.raises(QualityGateError, match="strength"):
        run_job(writes(-3.0), writes(-3.0).options(), config)

    runs = job_runs(spark, lake).orderBy("started_at").collect()
    assert [(r["job"], r["status"], r["rows_in"], r["rows_out"], r["model_version"]) for r in runs] == [
        ("probe", "succeeded", 5, 1, "7"),
        ("probe", "failed", 5, 1, "7"),
    ]
    assert runs[1]["error"].startswith("QualityGateError: ")
    gates = lake.read(spark, QUALITY_RESULTS).orderBy("validated_at").collect()
    assert [(g["job"], g["suite"], g["success"], g["rows_validated"]) for g in gates] == [
        ("probe", "interactions", True, 1),
        ("probe", "interactions", False, 1),
    ]


def test_failure_without_spark_is_logged_not_raised(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    """A job that failed before building Spark keeps its own error; the record is skipped."""
    with (
        caplog.at_level(logging.WARNING, logger="recspark.ops.runs"),
        pytest.raises(KeyError, match="boom"),
        track_job(lambda: None, lake_of(config), "train"),
    ):
        raise KeyError("boom")
    assert "not recorded" in caplog.text


def test_error_text_is_one_line_and_bounded() -> None:
    assert error_text(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert error_text(RuntimeError()) == "RuntimeError"
    assert len(error_text(RuntimeError("x" * 5000))) == 1000


def test_active_spark_is_the_running_session(spark: SparkSession) -> None:
    assert active_spark() is spark


def test_age_and_duration_formats() -> None:
    assert [format_age(s) for s in (5, 200, 7300, 3 * 86_400)] == [
        "5s ago",
        "3m ago",
        "2h ago",
        "3d ago",
    ]
    assert [format_duration(s) for s in (None, 0.42, 42, 185, 3720)] == [
        "-",
        "0.4s",
        "42s",
        "3m05s",
        "1h02m",
    ]


def _seed_lake(spark: SparkSession, lake: Lake) -> None:
    lake.ensure(spark, INTERACTIONS)
    now = datetime.now(timezone.utc)
    rows = [(f"u{i}", "i1", 1, 0, 0, 0, 0, None, now, now, 1.0, 1.0, now) for i in range(3)]
    spark.createDataFrame(rows, INTERACTIONS_SCHEMA).write.format("delta").mode("append").save(
        lake.path(INTERACTIONS.name)
    )
    start = now - timedelta(minutes=30)
    for i, (job, status, rows_out, error) in enumerate(
        [
            ("ingest", "succeeded", 3, None),
            ("train", "failed", None, "TrainingError: only 3 positive interactions"),
        ]
    ):
        run = JobRun(
            job=job, run_id=f"run{i}", started_at=start + timedelta(minutes=10 * i), rows_out=rows_out
        )
        ended_at = start + timedelta(minutes=10 * i, seconds=95)
        record_job_run(spark, lake, run, ended_at=ended_at, status=status, error=error)


def test_status_report_shows_tables_runs_and_no_champion(spark: SparkSession, config: Config) -> None:
    lake = lake_of(config)
    _seed_lake(spark, lake)

    report = status_report(spark, config, lake)

    lines = report.splitlines()
    interactions = next(line for line in lines if line.strip().startswith("interactions"))
    assert interactions.split()[1:3] == ["3", "1"]  # 3 rows, version 1 (create, then append)
    assert interactions.endswith("ago")
    job_runs_line = next(line for line in lines if line.strip().startswith("job_runs"))
    assert job_runs_line.split()[1] == "2"
    assert "not written yet: events, events_quarantine" in report
    assert "no champion" in report
    runs = [line.split() for line in lines if line.strip().startswith(("ingest ", "train "))]
    assert [r[:2] for r in runs] == [["train", "failed"], ["ingest", "succeeded"]]
    assert runs[0][4:6] == ["1m35s", "-"]
    assert "TrainingError: only 3 positive interactions" in report


def test_status_report_on_the_champion(spark: SparkSession, config: Config) -> None:
    experiment = configure_mlflow(config.mlflow)  # a store, but nothing ever registered
    lake = lake_of(config)

    empty = status_report(spark, config, lake)

    assert f"no champion: model '{config.mlflow.model_name}' has no champion" in empty
    assert "no tables yet" in empty
    assert "none recorded yet" in empty

    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_metrics({"ndcg_at_k": 0.2125, "popular_ndcg_at_k": 0.1, "recall_at_k": 0.3})
    client = MlflowClient()
    client.create_registered_model(config.mlflow.model_name)
    version = client.create_model_version(
        config.mlflow.model_name, f"{run.info.artifact_uri}/model", run.info.run_id
    )
    client.set_registered_model_alias(config.mlflow.model_name, "champion", version.version)

    report = status_report(spark, config, lake)

    assert f"champion: version {version.version} (run {run.info.run_id}" in report
    assert "ndcg_at_k 0.2125  popular_ndcg_at_k 0.1000  precision_at_k -  recall_at_k 0.3000" in (report)


def test_status_report_survives_an_unusable_tracking_store(
    spark: SparkSession, config: Config, tmp_path: Path
) -> None:
    (tmp_path / "not-a-db").write_text("garbage", encoding="utf-8")
    config = config.with_overrides([f"mlflow.tracking_uri=sqlite:///{tmp_path / 'not-a-db'}"])
    report = status_report(spark, config, lake_of(config))
    assert "tracking store not reachable" in report


SECRET_URI = "http://bob:s3cret@host/"


def test_failed_run_and_status_never_show_credentials(spark: SparkSession, config: Config) -> None:
    lake = lake_of(config)
    with pytest.raises(RuntimeError), track_job(lambda: spark, lake, "train"):
        raise RuntimeError(f"MLflow tracking store at {SECRET_URI} is not reachable")

    row = job_runs(spark, lake).first()
    assert row is not None
    assert row["error"] == "RuntimeError: MLflow tracking store at http://***@host/ is not reachable"

    # Port 9 (discard) on this machine: the tracking server refuses at once.
    unreachable = config.with_overrides(["mlflow.tracking_uri=http://bob:s3cret@127.0.0.1:9/"])
    report = status_report(spark, unreachable, lake)
    assert "s3cret" not in report
    assert "MLflow at http://***@127.0.0.1:9/" in report
    assert "http://***@host/ is not reachable" in report


def test_cli_logging_redacts_every_record(restored_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("train")
    log = logging.getLogger("recspark.anything")

    log.info("tracking store at %s", SECRET_URI)
    try:
        raise ConnectionError(f"cannot reach {SECRET_URI}")
    except ConnectionError:
        log.exception("request failed")

    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert "tracking store at http://***@host/" in err
    assert "ConnectionError: cannot reach http://***@host/" in err


# --------------------------------------------------------------------------------------------
# status --json: the same gathered data, for monitoring systems


def _seed_gate(spark: SparkSession, lake: Lake, failures: str) -> None:
    at = datetime.now(timezone.utc)
    lake.append_row(
        spark,
        QUALITY_RESULTS,
        (at, "ingest", "interactions", "interactions", 1, False, 6, 1, failures, "warn", 9, "whole table"),
    )


def test_status_json_holds_what_the_report_shows(spark: SparkSession, config: Config) -> None:
    lake = lake_of(config)
    _seed_lake(spark, lake)
    _seed_gate(spark, lake, "strength: 1 null")

    snapshot = gather_status(spark, config, lake)
    data = json.loads(json.dumps(status_json(snapshot)))

    tables = {t["name"]: t for t in data["tables"]}
    assert [t["name"] for t in data["tables"]] == [spec.name for spec in ALL_TABLES]
    interactions = tables["interactions"]
    assert (interactions["exists"], interactions["rows"], interactions["version"]) == (True, 3, 1)
    committed = datetime.fromisoformat(interactions["last_commit"])
    assert committed.tzinfo is not None and abs(datetime.now(timezone.utc) - committed) < timedelta(
        minutes=10
    )
    assert 0 <= interactions["age_seconds"] < 600
    assert tables["events"] == {
        "name": "events",
        "exists": False,
        "rows": None,
        "version": None,
        "last_commit": None,
        "age_seconds": None,
        "error": None,
    }
    assert data["champion"]["state"] == "no_store" and data["champion"]["version"] is None
    runs = [
        (r["job"], r["status"], r["duration_seconds"], r["rows_out"], r["error"]) for r in data["job_runs"]
    ]
    assert runs == [
        ("train", "failed", 95.0, None, "TrainingError: only 3 positive interactions"),
        ("ingest", "succeeded", 95.0, 3, None),
    ]
    assert datetime.fromisoformat(data["job_runs"][0]["started_at"]) > datetime.fromisoformat(
        data["job_runs"][1]["started_at"]
    )
    gate = data["quality_gates"]
    assert [
        (g["suite"], g["table"], g["table_version"], g["success"], g["action"], g["failures"]) for g in gate
    ] == [("interactions", "interactions", 1, False, "warn", "strength: 1 null")]
    # Which rows the gate saw: a run's own, or the whole table (the daily `recspark check`).
    assert (gate[0]["rows_validated"], gate[0]["scope"]) == (9, "whole table")
    # The text report renders the same snapshot.
    text = render_status(snapshot)
    assert "TrainingError: only 3 positive interactions" in text
    assert "FAILED (warn)" in text and "strength: 1 null" in text and "whole table" in text


def test_status_reads_gates_recorded_before_rows_and_scope_existed(
    spark: SparkSession, config: Config
) -> None:
    """A lake whose gates all ran on an older version has no rows_validated or scope column yet
    (the next gate adds them): status still shows its gates."""
    lake = lake_of(config)
    older = StructType([f for f in QUALITY_RESULTS.schema if f.name not in ("rows_validated", "scope")])
    at = datetime.now(timezone.utc)
    spark.createDataFrame(
        [(at, "ingest", "events", "events", 1, True, 9, 0, None, "warn")], older
    ).write.format("delta").save(lake.path(QUALITY_RESULTS.name))

    gates = status_json(gather_status(spark, config, lake))["quality_gates"]

    assert [(g["suite"], g["success"], g["rows_validated"], g["scope"]) for g in gates] == [
        ("events", True, None, None)
    ]


def test_status_json_names_the_champion_family_and_when_it_was_promoted(
    spark: SparkSession, config: Config
) -> None:
    experiment = configure_mlflow(config.mlflow)
    lake = lake_of(config)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_metrics({"ndcg_at_k": 0.2125, "recall_at_k": 0.3})
    client = MlflowClient()
    client.create_registered_model(config.mlflow.model_name)
    version = client.create_model_version(
        config.mlflow.model_name, f"{run.info.artifact_uri}/model", run.info.run_id
    ).version
    client.set_model_version_tag(config.mlflow.model_name, version, "model_family", "ease")
    before = datetime.now(timezone.utc)
    move_alias(spark, lake, config.mlflow, champion_move(config.mlflow, str(version), "promote", "test"))

    snapshot = gather_status(spark, config, lake)
    champion = status_json(snapshot)["champion"]

    assert (champion["state"], champion["version"], champion["run_id"], champion["family"]) == (
        "champion",
        str(version),
        run.info.run_id,
        "ease",
    )
    promoted = datetime.fromisoformat(champion["promoted_at"])
    assert before - timedelta(seconds=1) <= promoted <= datetime.now(timezone.utc)
    assert champion["registered_at"] is not None
    assert champion["metrics"] == {
        "ndcg_at_k": 0.2125,
        "popular_ndcg_at_k": None,
        "precision_at_k": None,
        "recall_at_k": 0.3,
    }
    assert f"champion: version {version} (run {run.info.run_id}" in render_status(snapshot)
    assert "family ease, champion since " in render_status(snapshot)


def test_status_json_never_shows_credentials(spark: SparkSession, config: Config) -> None:
    """Rows written before errors were redacted still quote secrets; every string is redacted on
    its own, so the output stays valid JSON."""
    lake = lake_of(config)
    at = datetime.now(timezone.utc)
    error = f'TrackingError: store {SECRET_URI} said "no" (?token=abc123;x)'
    lake.append_row(spark, JOB_RUNS, ("r1", "train", at, at, "failed", None, None, None, error, None))
    _seed_gate(spark, lake, f"password=hunter2 in {SECRET_URI}")
    unreachable = config.with_overrides(["mlflow.tracking_uri=http://bob:s3cret@127.0.0.1:9/"])

    text = json.dumps(status_json(gather_status(spark, unreachable, lake)))

    for secret in ("s3cret", "abc123", "hunter2"):
        assert secret not in text
    data = json.loads(text)
    assert data["champion"]["tracking_uri"] == "http://***@127.0.0.1:9/"
    assert data["champion"]["state"] == "unreachable"
    assert data["job_runs"][0]["error"] == 'TrackingError: store http://***@host/ said "no" (?token=***;x)'
    assert data["quality_gates"][0]["failures"] == "password=*** in http://***@host/"


def test_status_cli_prints_one_json_object(
    spark: SparkSession, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = lake_of(config)
    _seed_lake(spark, lake)
    settings = [f"lake.root={config.lake.root}", f"mlflow.tracking_uri={config.mlflow.tracking_uri}"]

    assert main(["status", "--json", *(arg for s in settings for arg in ("--set", s))]) == 0

    data = json.loads(capsys.readouterr().out)
    assert set(data) == {
        "generated_at",
        "lake_root",
        "tables",
        "champion",
        "job_runs",
        "quality_gates",
        "catalog",
        "outcomes",
        "outcome_issues",
    }
    assert data["lake_root"] == lake.root
    assert [r["job"] for r in data["job_runs"]] == ["train", "ingest"]


@pytest.mark.slow
def test_train_and_status_say_why_the_newest_version_was_not_promoted_and_how_long_the_champion_held(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    shop, trained = trained_shop
    config = copy_shop(shop, tmp_path, "mlflow.min_test_users=100000")
    lake = lake_of(config)

    result = train(spark, config, lake, gate=no_gate)

    assert not result.promoted and result.status == "insufficient_evidence"
    assert result.champion_version == trained.model_version and result.champion_since is not None
    champion = f"champion version {trained.model_version}"
    assert result.outcome().startswith(
        f"not promoted (insufficient_evidence): {result.reason}; {champion} stays"
    )
    held = f"since {result.champion_since:%Y-%m-%d %H:%M:%S} UTC"
    assert re.search(rf"{champion} stays, unchanged for \d+\.\d days {held}$", result.outcome())
    tags = MlflowClient().get_model_version(config.mlflow.model_name, result.model_version).tags
    assert tags["promotion_status"] == "insufficient_evidence" and tags["promotion_reason"] == result.reason
    assert tags["judged_against_champion"] == trained.model_version

    snapshot = gather_status(spark, config, lake)
    text = render_status(snapshot)
    since = datetime.fromtimestamp(snapshot.champion.promoted_at, timezone.utc)
    assert f"  {champion}, unchanged for " in text and f" since {since:%Y-%m-%d %H:%M:%S} UTC" in text
    assert f"newest train run: version {result.model_version} (" in text
    assert f"not promoted (insufficient_evidence): {result.reason}" in text
    data = status_json(snapshot)["champion"]
    assert (data["version"], data["newest_version"], data["newest_promoted"], data["newest_status"]) == (
        trained.model_version,
        result.model_version,
        False,
        "insufficient_evidence",
    )
    assert data["newest_reason"] == result.reason and data["unchanged_seconds"] >= 0
    assert datetime.fromisoformat(data["newest_trained_at"]) >= since


BROKEN_CATALOG = "".join(
    line + "\n"
    for line in [
        '{"item_id": "i1", "available": true}',
        '{"item_id": "i2", "available": tr',
        '{"item_id": "i3", "available": "maybe"}',
        '{"title": "no id"}',
        '{"item_id": "i4", "available": false}',
    ]
)


def test_status_shows_what_the_catalogs_malformed_lines_hold_back(
    spark: SparkSession, config: Config
) -> None:
    lake = lake_of(config)
    catalog = Path(config.catalog.path)
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text(BROKEN_CATALOG)

    snapshot = gather_status(spark, config, lake)
    data = status_json(snapshot)["catalog"]

    assert (data["path"], data["unlisted_items"], data["error"]) == (str(catalog), "exclude", None)
    assert (data["lines"], data["malformed_lines"], data["items"], data["available_items"]) == (5, 3, 4, 1)
    assert data["held_back_items"] == 2  # i2 and i3: the line without an id holds back nothing
    assert {r["reason"]: r["lines"] for r in data["reasons"]} == {
        "malformed JSON": 1,
        "available is not true/false": 1,
        "missing item_id": 1,
    }
    text = render_status(snapshot)
    assert "3 of 5 lines malformed: 2 items held back" in text
    assert "available is not true/false" in text and "i3" in text

    catalog.unlink()
    assert "cannot read catalog" in status_json(gather_status(spark, config, lake))["catalog"]["error"]
    nothing = config.with_overrides(["catalog.path=null"])
    assert "no catalog (catalog.path is null): every item is eligible" in render_status(
        gather_status(spark, nothing, lake)
    )


@pytest.mark.slow
def test_a_job_that_reads_the_catalog_records_its_malformed_lines(
    spark: SparkSession, config: Config
) -> None:
    lake = lake_of(config)
    _seed_lake(spark, lake)
    catalog = Path(config.catalog.path)
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text(BROKEN_CATALOG)
    settings = [
        f"lake.root={config.lake.root}",
        f"catalog.path={catalog}",
        f"mlflow.tracking_uri={config.mlflow.tracking_uri}",
        "serve.top_n=1",
        "quality.data_docs=false",
    ]

    assert main(["recommend", *(arg for s in settings for arg in ("--set", s))]) == 0

    run = job_runs(spark, lake).where("job = 'recommend'").first()
    assert (run["status"], run["catalog_malformed_lines"]) == ("succeeded", 3)
    runs = status_json(gather_status(spark, config, lake))["job_runs"]
    assert runs[0]["job"] == "recommend" and runs[0]["catalog_malformed_lines"] == 3
