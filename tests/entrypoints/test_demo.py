"""`recspark demo --fresh` deletes only what the demo created (marked with `.recspark-demo`); a real
run runs its stages as the CLI runs those jobs (the same `job_runs` rows and gates) and ends by
pointing to the next commands, which work on it."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark import demo
from recspark.cli import main
from recspark.core.config import Config
from recspark.core.tables import JOB_RUNS, QUALITY_RESULTS, RECOMMENDATIONS, Lake
from recspark.datasets.shop.files import LandingNotEmptyError
from tests.conftest import SHOP_TOP_N, config_under, shop_config

SMALL_SHOP = ("generate.users=50", "generate.items=40", "generate.events=1000", "generate.days=3")


class SparkReached(Exception):
    """Raised instead of starting Spark: everything before it is what these tests check."""


@pytest.fixture
def no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: object, **kwargs: object) -> None:
        raise SparkReached

    monkeypatch.setattr(demo, "build_spark", stop)


def _state_paths(config: Config) -> list[Path]:
    return [
        Path(config.lake.root),
        Path(config.ingest.path),
        Path(str(config.catalog.path)),
        Path(str(config.mlflow.artifact_location)),
        Path(config.mlflow.tracking_uri.removeprefix("sqlite:///")),
    ]


def test_fresh_refuses_a_directory_it_did_not_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work\n")
    config = config_under(tmp_path, f"lake.root={precious}")

    with pytest.raises(demo.UnsafeResetError, match=rf"{precious}.*\.recspark-demo"):
        demo.reset_local_state(config)
    assert (precious / "thesis.tex").read_text() == "years of work\n"

    def ran(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo ran")

    monkeypatch.setattr("recspark.datasets.shop.files.write_shop", ran)
    paths = [f"lake.root={precious}", f"ingest.path={tmp_path / 'events'}"]
    paths += [f"catalog.path={tmp_path / 'c.jsonl'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"]
    paths += [f"mlflow.artifact_location={tmp_path / 'art'}"]
    code = main(["demo", "--fresh", *(arg for p in paths for arg in ("--set", p))])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"recspark demo: error: --fresh refuses to delete {precious}:")
    assert "\n" not in err
    assert (precious / "thesis.tex").exists()


def test_demo_marks_what_it_creates_and_fresh_resets_it(tmp_path: Path, no_spark: None) -> None:
    config = config_under(tmp_path / "state", *SMALL_SHOP)
    with pytest.raises(SparkReached):  # a clean clone: nothing to delete yet
        demo.run_demo(config, fresh=True)
    lake, events, catalog, artifacts, db = _state_paths(config)
    for directory in (lake, events, artifacts, catalog.parent, db.parent):
        assert (directory / demo.MARKER).is_file()
    (lake / "events").mkdir()
    (lake / "events" / "part-0.parquet").write_text("table data")
    (artifacts / "model.pkl").write_text("model")
    db.write_text("sqlite")
    first_events = sorted(p.name for p in events.iterdir())

    with pytest.raises(LandingNotEmptyError, match="demo --fresh"):
        demo.run_demo(config, fresh=False)
    with pytest.raises(SparkReached):
        demo.run_demo(config, fresh=True)

    assert not (lake / "events").exists()
    assert not (artifacts / "model.pkl").exists()
    assert not db.exists()
    assert sorted(p.name for p in events.iterdir()) == first_events  # generated afresh
    assert catalog.is_file()


def test_a_directory_holding_other_data_is_never_marked(tmp_path: Path, no_spark: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("mine\n")
    config = config_under(tmp_path, f"mlflow.artifact_location={shared}", *SMALL_SHOP)

    with pytest.raises(SparkReached):
        demo.run_demo(config, fresh=False)

    assert not (shared / demo.MARKER).exists()
    with pytest.raises(demo.UnsafeResetError, match=str(shared)):
        demo.run_demo(config, fresh=True)
    assert (shared / "notes.txt").exists()
    assert (Path(config.lake.root) / demo.MARKER).is_file()  # the lake it created is its own


# --------------------------------------------------------------------------------------------
# A real demo run on a small shop: its stages in job_runs, the report's next steps, and the
# commands it points to (`status --json`, `show`) on the lake it leaves.

DEMO_SHOP = (
    "generate.users=300",
    "generate.items=80",
    "generate.categories=8",
    "generate.events=15000",
    "generate.days=21",
    "generate.seed=11",
)


@pytest.fixture(scope="module")
def demo_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, str]:
    """The demo once for this module (its config and printed report)."""
    config = shop_config(tmp_path_factory.mktemp("demo"), "als", *DEMO_SHOP)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        demo.run_demo(config, fresh=False)
    return config, report.getvalue()


def _cli(config: Config) -> list[str]:
    settings = [f"lake.root={config.lake.root}", f"mlflow.tracking_uri={config.mlflow.tracking_uri}"]
    return [arg for setting in settings for arg in ("--set", setting)]


@pytest.mark.slow
def test_each_demo_stage_on_the_lake_is_a_job_run(spark: SparkSession, demo_run: tuple[Config, str]) -> None:
    """The rows `recspark ingest --once`, `train` and `recommend` leave (generate writes files
    outside the lake and is no tracked job, from the CLI or the demo)."""
    config, _ = demo_run
    runs = (
        Lake.at(config.lake.root)
        .read(spark, JOB_RUNS)
        .orderBy("started_at")
        .select("job", "status", "rows_in", "rows_out", "model_version", "error")
        .collect()
    )

    assert [(r["job"], r["status"], r["error"]) for r in runs] == [
        (job, "succeeded", None) for job in ("ingest", "train", "recommend")
    ]
    ingest, train, recommend = runs
    assert ingest["rows_in"] > ingest["rows_out"] > 0  # broken lines and duplicates are not events
    assert train["model_version"] == "1"
    assert recommend["rows_out"] > 0


@pytest.mark.slow
def test_the_demos_ingest_gates_the_rows_it_wrote_as_the_cli_does(
    spark: SparkSession, demo_run: tuple[Config, str]
) -> None:
    config, _ = demo_run
    gates = Lake.at(config.lake.root).read(spark, QUALITY_RESULTS).where(F.col("job") == "ingest").collect()

    assert sorted(r["suite"] for r in gates) == ["events", "interactions"]
    assert all(r["scope"].startswith("rows written since ") and r["rows_validated"] > 0 for r in gates)


@pytest.mark.slow
def test_the_report_ends_with_the_next_commands(spark: SparkSession, demo_run: tuple[Config, str]) -> None:
    config, report = demo_run
    tail = report.rstrip().split("Next, from the repository root", 1)[1].splitlines()[1:]
    commands = [line.split("  #", 1)[0].strip() for line in tail]

    assert commands[0] == "recspark status"
    assert commands[1].startswith("recspark show ")
    user = commands[1].removeprefix("recspark show ")
    recommendations = Lake.at(config.lake.root).read(spark, RECOMMENDATIONS)
    assert recommendations.where(F.col("user_id") == user).count() > 0
    assert commands[2] == f"mlflow ui --backend-store-uri {config.mlflow.tracking_uri}"
    assert commands[3] == demo.NOTEBOOK
    assert (Path(__file__).parents[2] / demo.NOTEBOOK).is_file()


@pytest.mark.slow
def test_status_json_on_the_demo_lake(
    demo_run: tuple[Config, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = demo_run

    assert main(["status", "--json", *_cli(config)]) == 0
    status = json.loads(capsys.readouterr().out)

    tables = {t["name"]: t for t in status["tables"]}
    for name in ("events", "interactions", "recommendations", "job_runs"):
        assert tables[name]["exists"] and tables[name]["rows"] > 0, name
    assert status["champion"]["state"] == "champion"
    assert (status["champion"]["version"], status["champion"]["family"]) == ("1", "als")
    assert status["champion"]["promoted_at"] is not None
    assert [r["job"] for r in status["job_runs"]] == ["recommend", "train", "ingest"]
    assert {g["suite"] for g in status["quality_gates"]} >= {"recommendations"}


@pytest.mark.slow
def test_show_on_the_demo_lake(demo_run: tuple[Config, str], capsys: pytest.CaptureFixture[str]) -> None:
    config, report = demo_run
    user = report.split("recspark show ", 1)[1].split()[0]

    assert main(["show", user, "--json", *_cli(config)]) == 0
    shown = json.loads(capsys.readouterr().out)

    assert shown["user_id"] == user
    assert shown["model_version"] == "1"
    assert [r["rank"] for r in shown["recommendations"]] == list(range(1, SHOP_TOP_N + 1))
    assert shown["history"]
