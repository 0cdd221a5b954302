"""Quality gates: every suite passes on clean data and names the one defect seeded into it; the
gate records its verdict in ``quality_results`` whether it stops the job or only warns."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.catalog import load_catalog
from recspark.core.config import Config
from recspark.core.tables import QUALITY_RESULTS, RECOMMENDATIONS, Lake
from recspark.ops.quality import ge_context
from recspark.ops.quality.gate import gate_table, run_gate
from recspark.ops.quality.ge_context import quality_dir
from recspark.ops.quality.result import QualityGateError, QualityResult
from recspark.ops.quality.suites import CATALOG_SUITE, EVENTS_SUITE, INTERACTIONS_SUITE, RECOMMENDATIONS_SUITE
from recspark.ops.quality.validation import validate

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
TOP_N = 3

EVENT_COLUMNS = (
    "event_id string, event_time timestamp, user_id string, item_id string, event_type string, value double"
)
CLEAN_EVENTS = [
    ("e1", T0, "u1", "i1", "view", None),
    ("e2", T0 + timedelta(minutes=1), "u1", "i1", "add_to_cart", None),
    ("e3", T0 + timedelta(minutes=2), "u1", "i1", "purchase", 1.0),
    ("e4", T0 + timedelta(minutes=3), "u2", "i2", "rating", 4.0),
    ("e5", T0 + timedelta(minutes=4), "u2", "i2", "remove_from_cart", None),
]

INTERACTION_COLUMNS = (
    "user_id string, item_id string, view_count long, add_to_cart_count long, "
    "remove_from_cart_count long, purchase_count long, rating_count long, strength double"
)
CLEAN_INTERACTIONS = [
    ("u1", "i1", 1, 1, 0, 1, 0, 9.0),
    ("u1", "i2", 2, 0, 1, 0, 0, 0.0),
    ("u2", "i2", 0, 0, 0, 0, 1, 0.8),
]

RECOMMENDATION_COLUMNS = "user_id string, rank int, item_id string, score double, source string"
CLEAN_RECOMMENDATIONS = [
    ("u1", 1, "i1", 0.9, "als"),
    ("u1", 2, "i2", 0.8, "als"),
    ("u1", 3, "i3", 0.8, "als"),
    ("u2", 1, "i3", 5.0, "popular"),
    ("u2", 2, "i1", 4.0, "popular"),
    ("u2", 3, "i4", 1.0, "popular"),
]


def frame(spark: SparkSession, rows: list[tuple], schema: str) -> DataFrame:
    # One partition: half the Spark tasks per expectation, same verdicts.
    return spark.createDataFrame(rows, schema).coalesce(1)


def replaced(rows: list[tuple], index: int, position: int, value: object) -> list[tuple]:
    row = list(rows[index])
    row[position] = value
    return [*rows[:index], tuple(row), *rows[index + 1 :]]


def failed_checks(result: QualityResult) -> list[str]:
    """The descriptions of the failed expectations (the text before the first colon)."""
    return sorted(f.split(":")[0] for f in result.failures)


# --------------------------------------------------------------------------------------------
# events


def test_events_suite_passes_on_clean_events(spark: SparkSession) -> None:
    result = validate(EVENTS_SUITE, frame(spark, CLEAN_EVENTS, EVENT_COLUMNS))
    assert result.success, result.failures
    assert (result.suite, result.evaluated, result.failed, result.failures) == ("events", 9, 0, [])


@pytest.mark.parametrize(
    ("defect", "rows", "expected"),
    [
        ("null user id", replaced(CLEAN_EVENTS, 1, 2, None), "user_id is never null"),
        (
            "unknown event type",
            replaced(CLEAN_EVENTS, 0, 4, "click"),
            "event_type is one of view, add_to_cart, remove_from_cart, purchase, rating, impression",
        ),
        ("duplicate event id", replaced(CLEAN_EVENTS, 1, 0, "e1"), "event_id is unique"),
        ("rating 9", replaced(CLEAN_EVENTS, 3, 5, 9.0), "rating values are between 1 and 5"),
        (
            "event from the future",
            replaced(CLEAN_EVENTS, 2, 1, datetime.now(timezone.utc) + timedelta(days=3)),
            "event_time is within ingest.min_event_time and ingest.max_future_minutes",
        ),
    ],
)
def test_events_suite_names_the_seeded_defect(
    spark: SparkSession, defect: str, rows: list[tuple], expected: str
) -> None:
    result = validate(EVENTS_SUITE, frame(spark, rows, EVENT_COLUMNS))
    assert not result.success, defect
    assert failed_checks(result) == [expected]
    assert result.failed == 1


# --------------------------------------------------------------------------------------------
# interactions


def test_interactions_suite_passes_on_clean_interactions(spark: SparkSession) -> None:
    result = validate(INTERACTIONS_SUITE, frame(spark, CLEAN_INTERACTIONS, INTERACTION_COLUMNS))
    assert result.success, result.failures
    assert result.evaluated == 9


@pytest.mark.parametrize(
    ("defect", "rows", "expected"),
    [
        ("null item id", replaced(CLEAN_INTERACTIONS, 0, 1, None), "item_id is never null"),
        ("negative strength", replaced(CLEAN_INTERACTIONS, 2, 7, -0.5), "strength is not negative"),
        (
            "duplicate pair",
            replaced(CLEAN_INTERACTIONS, 1, 1, "i1"),
            "one row per (user_id, item_id)",
        ),
    ],
)
def test_interactions_suite_names_the_seeded_defect(
    spark: SparkSession, defect: str, rows: list[tuple], expected: str
) -> None:
    result = validate(INTERACTIONS_SUITE, frame(spark, rows, INTERACTION_COLUMNS))
    assert not result.success, defect
    assert failed_checks(result) == [expected]


# --------------------------------------------------------------------------------------------
# recommendations


def test_recommendations_suite_passes_on_clean_recommendations(spark: SparkSession) -> None:
    unavailable = spark.createDataFrame([("i9",), (None,)], "item_id string")
    result = validate(
        RECOMMENDATIONS_SUITE,
        frame(spark, CLEAN_RECOMMENDATIONS, RECOMMENDATION_COLUMNS),
        top_n=TOP_N,
        unavailable_items=unavailable,
    )
    assert result.success, result.failures
    assert result.evaluated == 10


@pytest.mark.parametrize(
    ("defect", "rows", "unavailable", "expected"),
    [
        (
            "a user with N-1 rows",
            CLEAN_RECOMMENDATIONS[:-1],
            None,
            "every user has top_n rows, or every eligible item left to them",
        ),
        (
            "duplicate (user, rank)",
            replaced(CLEAN_RECOMMENDATIONS, 2, 1, 2),
            None,
            "one row per (user_id, rank)",
        ),
        (
            "an unavailable item",
            CLEAN_RECOMMENDATIONS,
            ["i4"],
            "no unavailable item is recommended",
        ),
        (
            "scores increasing with rank",
            replaced(CLEAN_RECOMMENDATIONS, 4, 3, 6.0),
            None,
            "scores do not increase with rank",
        ),
        (
            "rank beyond N",
            replaced(CLEAN_RECOMMENDATIONS, 5, 1, 4),
            None,
            "rank is between 1 and top_n",
        ),
    ],
)
def test_recommendations_suite_names_the_seeded_defect(
    spark: SparkSession,
    defect: str,
    rows: list[tuple],
    unavailable: list[str] | None,
    expected: str,
) -> None:
    unavailable_items = (
        None if unavailable is None else spark.createDataFrame([(i,) for i in unavailable], "item_id string")
    )
    result = validate(
        RECOMMENDATIONS_SUITE,
        frame(spark, rows, RECOMMENDATION_COLUMNS),
        top_n=TOP_N,
        unavailable_items=unavailable_items,
    )
    assert not result.success, defect
    assert failed_checks(result) == [expected]


def test_recommendations_accept_fewer_rows_when_told_the_catalog_is_smaller(
    spark: SparkSession,
) -> None:
    short = [r for r in CLEAN_RECOMMENDATIONS if r[1] < 3]  # two rows each, N = 3
    result = validate(
        RECOMMENDATIONS_SUITE, frame(spark, short, RECOMMENDATION_COLUMNS), top_n=TOP_N, min_rows=2
    )
    assert result.success, result.failures


def test_a_short_list_passes_only_for_a_user_with_fewer_eligible_items_left(spark: SparkSession) -> None:
    """``room``: per user, the eligible items not excluded for them; a list holds top_n rows,
    or all of them when fewer (the contract's "unless the catalog is smaller", per user)."""
    short = frame(spark, [r for r in CLEAN_RECOMMENDATIONS if r[:2] != ("u1", 3)], RECOMMENDATION_COLUMNS)

    def check(room: list[tuple[str, int]]) -> QualityResult:
        rooms = spark.createDataFrame(room, "user_id string, room long")
        return validate(RECOMMENDATIONS_SUITE, short, top_n=TOP_N, room=rooms)

    assert check([("u1", 2)]).success
    for room in ([("u1", 5)], [("u2", 1)], []):  # room for more, or none known for u1
        result = check(room)
        assert failed_checks(result) == ["every user has top_n rows, or every eligible item left to them"]


CATALOG_LINES = "".join(
    line + "\n"
    for line in [
        '{"item_id": "a", "available": true}',
        '{"item_id": "b", "available": tr',
        '{"title": "no id"}',
        '{"item_id": "c", "available": false}',
    ]
)


def test_catalog_suite_names_the_malformed_lines(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(CATALOG_LINES)

    result = validate(CATALOG_SUITE, load_catalog(spark, str(path)).lines)

    assert not result.success and result.rows == 4
    assert failed_checks(result) == ["every catalog line is well-formed"]
    assert "2 of 4 rows do not" in result.failures[0]
    assert "malformed JSON" in result.failures[0] and "missing item_id" in result.failures[0]
    path.write_text('{"item_id": "a"}\n')
    assert validate(CATALOG_SUITE, load_catalog(spark, str(path)).lines).success


def test_a_malformed_catalog_warns_by_default_and_stops_the_job_when_set_to(
    spark: SparkSession, config: Config, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(CATALOG_LINES)
    lines = load_catalog(spark, str(path)).lines
    lake = lake_of(config)

    warned = run_gate(spark, gate_config(config), lake, CATALOG_SUITE, lines, job="recommend")
    assert (warned.success, warned.action) == (False, "warn")
    with pytest.raises(QualityGateError, match="every catalog line is well-formed"):
        run_gate(
            spark,
            gate_config(config, "quality.on_failure.catalog=fail"),
            lake,
            CATALOG_SUITE,
            lines,
            job="train",
        )
    recorded = results(spark, lake).orderBy("validated_at").collect()
    assert [(r["suite"], r["job"], r["success"], r["action"]) for r in recorded] == [
        ("catalog", "recommend", False, "warn"),
        ("catalog", "train", False, "fail"),
    ]


# --------------------------------------------------------------------------------------------
# the gate


def gate_config(config: Config, *overrides: str) -> Config:
    return config.with_overrides(["quality.data_docs=false", *overrides])


def lake_of(config: Config) -> Lake:
    return Lake.at(config.lake.root)


def results(spark: SparkSession, lake: Lake) -> DataFrame:
    return spark.read.format("delta").load(lake.path(QUALITY_RESULTS.name))


def test_failing_gate_raises_after_recording_the_result(spark: SparkSession, config: Config) -> None:
    config = gate_config(config, "quality.on_failure.interactions=fail")
    lake = lake_of(config)
    bad = frame(spark, replaced(CLEAN_INTERACTIONS, 2, 7, -0.5), INTERACTION_COLUMNS)

    with pytest.raises(QualityGateError) as raised:
        run_gate(spark, config, lake, "interactions", bad, job="train", table_version=7)

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("quality gate 'interactions' failed on table interactions version 7")
    assert "strength is not negative: 1 of 3 rows" in message
    expected = spark.createDataFrame(
        [
            (
                "train",
                "interactions",
                "interactions",
                7,
                False,
                9,
                1,
                "strength is not negative: 1 of 3 rows do not (e.g. -0.5)",
                "fail",
                3,
                "whole table",
            )
        ],
        "job string, suite string, table_name string, table_version long, success boolean, "
        "evaluated_expectations int, failed_expectations int, failures string, action string, "
        "rows_validated long, scope string",
    )
    recorded = results(spark, lake)
    assert_df_equality(
        recorded.drop("validated_at"), expected, ignore_nullable=True, ignore_column_order=True
    )
    age = recorded.select(
        (F.current_timestamp().cast("double") - F.col("validated_at").cast("double")).alias("s")
    ).first()
    assert age is not None and 0 <= age["s"] < 600


def test_warning_gate_records_and_continues(spark: SparkSession, config: Config) -> None:
    config = gate_config(config, "quality.on_failure.events=warn")
    lake = lake_of(config)
    bad = frame(spark, replaced(CLEAN_EVENTS, 0, 4, "click"), EVENT_COLUMNS)

    result = run_gate(spark, config, lake, "events", bad, job="ingest")

    assert (result.success, result.action, result.table_name) == (False, "warn", "events")
    row = results(spark, lake).first()
    assert row is not None
    assert (row["job"], row["success"], row["action"], row["table_version"]) == (
        "ingest",
        False,
        "warn",
        None,
    )
    assert row["failures"].startswith("event_type is one of")


def test_passing_gate_appends_one_row_per_run_and_builds_data_docs(
    spark: SparkSession, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ge_context, "DOCS_HISTORY", 1)  # keep only the newest result's page
    config = config.with_overrides([f"serve.top_n={TOP_N}"])  # Data Docs are on by default
    lake = lake_of(config)
    recs = frame(spark, CLEAN_RECOMMENDATIONS, RECOMMENDATION_COLUMNS)

    first = run_gate(spark, config, lake, "recommendations", recs, job="recommend", table_version=1)
    run_gate(spark, config, lake, "recommendations", recs, job="recommend", table_version=2)

    assert (first.success, first.evaluated, first.failed, first.action) == (True, 10, 0, "fail")
    rows = results(spark, lake).orderBy("table_version").collect()
    assert [(r["table_version"], r["success"], r["failures"]) for r in rows] == [
        (1, True, None),
        (2, True, None),
    ]
    docs = Path(config.lake.root) / "_quality" / "data_docs"
    assert (docs / "index.html").is_file()
    pages = list((docs / "validations" / "recommendations").rglob("*.html"))
    assert len(pages) == 1
    assert (docs / "expectations" / "recommendations.html").is_file()
    assert "recommendations" in (docs / "index.html").read_text(encoding="utf-8")


def test_disabled_quality_skips_everything(spark: SparkSession, config: Config) -> None:
    config = gate_config(config, "quality.enabled=false")
    lake = lake_of(config)
    bad = frame(spark, replaced(CLEAN_INTERACTIONS, 2, 7, -0.5), INTERACTION_COLUMNS)

    result = run_gate(spark, config, lake, "interactions", bad, job="train")

    assert (result.success, result.action, result.evaluated) == (True, "skipped", 0)
    assert not Path(lake.path(QUALITY_RESULTS.name)).exists()


def test_unknown_suite_is_refused(spark: SparkSession, config: Config) -> None:
    with pytest.raises(ValueError, match="unknown quality suite 'orders'"):
        run_gate(spark, config, lake_of(config), "orders", spark.range(1), job="x")


def test_data_docs_only_for_local_lakes() -> None:
    assert quality_dir(Lake("s3a://bucket/lake")) is None
    assert quality_dir(Lake("/data/lake")) == Path("/data/lake/_quality")
    assert quality_dir(Lake("file:///data/lake")) == Path("/data/lake/_quality")


def test_a_runs_gate_validates_only_the_rows_written_since_it_started(
    spark: SparkSession, config: Config
) -> None:
    """A refresh that rewrote one user's list validates that list, not the whole serving table
    (whose cost follows the table); the scheduled whole-table check still sees every row."""
    config = gate_config(config, f"serve.top_n={TOP_N}")
    lake = lake_of(config)
    lake.ensure(spark, RECOMMENDATIONS)
    earlier, started = T0, T0 + timedelta(hours=1)
    short_list = [
        ("u1", 1, "i1", 0.9, "als", "1", earlier, None),
        ("u1", 2, "i2", 0.8, "als", "1", earlier, None),
    ]
    fresh_list = [
        (user, rank, item, score, source, "1", started + timedelta(seconds=5), None)
        for user, rank, item, score, source in CLEAN_RECOMMENDATIONS
        if user == "u2"
    ]
    spark.createDataFrame(short_list + fresh_list, RECOMMENDATIONS.schema).write.format("delta").mode(
        "append"
    ).save(lake.path(RECOMMENDATIONS.name))

    run = gate_table(spark, config, lake, RECOMMENDATIONS, job="refresh", written_since=started)
    assert (run.success, run.rows, run.scope) == (True, 3, "rows written since 2026-11-01 13:00:00 UTC")
    with pytest.raises(QualityGateError, match="every user has top_n rows"):
        gate_table(spark, config, lake, RECOMMENDATIONS, job="check")

    recorded = results(spark, lake).orderBy("validated_at").collect()
    assert [(r["job"], r["success"], r["rows_validated"], r["scope"]) for r in recorded] == [
        ("refresh", True, 3, run.scope),
        ("check", False, 5, "whole table"),
    ]
