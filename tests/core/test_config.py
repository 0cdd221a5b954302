"""Operators get one clear line for every config mistake, before Spark starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession

from recspark.cli import main
from recspark.core.config import Config, ConfigError, load_config
from recspark.core.config_reference import REGENERATE, reference, render_value, sections, settings, value_at

REPO = Path(__file__).resolve().parents[2]

# Where conf/local.yaml departs from the defaults in code, each on purpose (the why is here).
LOCAL_YAML_DEPARTURES = {
    "spark.conf": "Delta replays its log with 50 tasks by default: far too many for two cores",
}


def test_shipped_configs_load() -> None:
    local = load_config(REPO / "conf" / "local.yaml", environ={})
    cluster = load_config(REPO / "conf" / "cluster.yaml", environ={})
    assert local.spark.master == "local[2]"
    assert cluster.spark.master is None
    assert cluster.ingest.source == "kafka"
    assert local.mlflow.tracking_uri.startswith("sqlite:///")


def test_contract_keys_are_settable() -> None:
    keys = {
        "spark.master": "local[1]",
        "lake.root": "/data/lake",
        "ingest.source": "files",
        "ingest.path": "/data/in",
        "ingest.kafka.bootstrap_servers": "localhost:9092",
        "ingest.kafka.topic": "events",
        "mlflow.tracking_uri": "sqlite:///x.db",
        "mlflow.model_name": "m",
        "serve.top_n": "7",
    }
    config = load_config(None, [f"{k}={v}" for k, v in keys.items()], environ={})
    assert config.serve.top_n == 7
    assert config.ingest.kafka.topic == "events"
    assert config.lake.root == "/data/lake"


def test_precedence_file_then_env_then_set(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("serve:\n  top_n: 5\ntrain:\n  rank: 4\n")
    config = load_config(
        conf,
        ["train.rank=16"],
        environ={"RECSPARK__SERVE__TOP_N": "12", "RECSPARK__TRAIN__RANK": "8"},
    )
    assert config.serve.top_n == 12
    assert config.train.rank == 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.rnak=3"], "unknown config key 'train.rnak'"),
        (["serve.top_n=ten"], "serve.top_n must be a whole number, got 'ten'"),
        (["serve.top_n=0"], "serve.top_n must be > 0"),
        (["ingest.source=ftp"], "ingest.source must be 'files' or 'kafka'"),
        (["ingest.source=kafka"], "ingest.kafka.bootstrap_servers"),
        (["interactions.weights.click=2"], "unknown event types: ['click']"),
        (["train.confidence=cubic"], "train.confidence must be 'log' or 'linear'"),
        (["nonsense"], "--set expects key=value"),
        (["quality.on_failure.events=explode"], "quality.on_failure values"),
        (["mlflow.promotion_metric=ndgc_at_k"], "mlflow.promotion_metric must be one of"),
        (["mlflow.promotion_margin=-0.05"], "mlflow.promotion_margin must be >= 0"),
        (["mlflow.promotion_confidence=1.5"], "mlflow.promotion_confidence must be in [0.5, 1)"),
        (["quality.on_failure.evnts=warn"], "quality.on_failure"),
        (["ingest.min_event_time=yesterday"], "ingest.min_event_time must be an ISO 8601 time"),
        (["ingest.min_event_time=2000-01-01T00:00:00"], "ingest.min_event_time needs a time zone"),
        # Bounds that keep every date the ingest derives (event date ± lateness, now + the future
        # allowance) valid in Python and Spark: year 1 or 1e12 minutes overflowed every batch.
        (
            ["ingest.min_event_time=0001-01-01T00:00:00Z"],
            "min_event_time must be at or after 1900-01-01T00:00:00Z",
        ),
        (
            ["ingest.min_event_time=1900-01-01T01:00:00+02:00"],
            "min_event_time must be at or after 1900-01-01T00:00:00Z",
        ),
        (["ingest.min_event_time=2999-01-01T00:00:00Z"], "ingest.min_event_time must not be in the future"),
        (
            ["ingest.max_future_minutes=1000000000000"],
            "ingest.max_future_minutes must be between 0 and 527040",
        ),
        (["ingest.max_future_minutes=.inf"], "ingest.max_future_minutes must be between 0 and 527040"),
        (["ingest.max_future_minutes=.nan"], "ingest.max_future_minutes must be between 0 and 527040"),
        (
            ["ingest.allowed_lateness_hours=1000000000"],
            "ingest.allowed_lateness_hours must be between 0 and 8784",
        ),
        (["ingest.max_file_age_days=1.0e+300"], "ingest.max_file_age_days must be > 0 and at most 36500"),
        (["train.test_days=soon"], "train.test_days"),
        (["train.driver_max_pairs=-1"], "train.driver_max_pairs must be an integer >= 0, got -1"),
        (["serve.trigger_seconds=0"], "serve.trigger_seconds must be > 0"),
        (["interactions.weights.impression=1"], "interactions.weights cannot weigh impressions"),
        (["outcomes.attribution_window_hours=0"], "outcomes.attribution_window_hours must be > 0"),
        (["impressions.queue_size=0"], "impressions.queue_size must be > 0"),
        (["impressions.flush_seconds=-1"], "impressions.flush_seconds must be > 0"),
    ],
)
def test_bad_values_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides, environ={})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(listing)


def test_cli_exits_nonzero_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--conf", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"recspark train: error: config file not found: {tmp_path / 'nope.yaml'}"
    code = main(["recommend", "--set", "serve.top_n=-1"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "recspark recommend: error: serve.top_n must be > 0"


def test_cli_missing_input_directory(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With a session active, the failed run is recorded in the lake: the test's own, never the
    # checkout's default one (a stray .recspark/lake there made `make demo` refuse to start).
    lake = tmp_path / "lake"
    code = main(
        ["ingest", "--once", "--set", f"ingest.path={tmp_path / 'none'}", "--set", f"lake.root={lake}"]
    )
    assert code == 2
    assert "is not a directory" in capsys.readouterr().err
    assert (lake / "job_runs" / "_delta_log").is_dir()


def scale_settings() -> dict[str, object]:
    """docs/scale.md's "Settings for that shop": each row's key and its YAML value."""
    text = (REPO / "docs" / "scale.md").read_text(encoding="utf-8")
    section = text.split("## Settings for that shop", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_.A-Z]+)` \| `([^`]+)` \|", section, flags=re.MULTILINE)
    return {key: yaml.safe_load(value) for key, value in rows}


def config_value(config: object, key: str) -> object:
    """The value of a dotted key in a loaded config (``spark.conf.<Spark setting>`` included)."""
    value = config
    parts = key.split(".")
    while parts:
        if isinstance(value, dict):
            return value[".".join(parts)]
        value = getattr(value, parts.pop(0))
    return value


def test_the_cluster_config_holds_the_settings_docs_scale_derives() -> None:
    settings = scale_settings()
    cluster = load_config(REPO / "conf" / "cluster.yaml", environ={})

    assert len(settings) >= 10, settings  # the table was read, not skipped
    assert {"ingest.trigger_seconds", "serve.trigger_seconds", "train.num_user_blocks"} <= set(settings)
    for key, expected in settings.items():
        actual = config_value(cluster, key)
        if isinstance(actual, str):
            assert actual == str(expected), key
        else:
            assert actual == expected, key


def test_the_config_reference_is_current() -> None:
    written = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == reference(), f"docs/config.md is stale: regenerate it with `{REGENERATE}`"


def test_every_config_key_has_a_description() -> None:
    undescribed = [s.key for s in settings().values() if not s.description]
    assert not undescribed, (
        f"config keys without a description: {undescribed}; write a docstring under each field "
        f"in recspark/core/config/, then `{REGENERATE}`"
    )
    assert {"ingest.kafka.topic", "serve.top_n", "quality.on_failure"} <= set(settings())
    assert [s.key for s in sections()][:3] == ["spark", "lake", "ingest"]


def test_the_readme_overview_names_real_keys_with_their_defaults() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/config.md)" in section, "the README's configuration section links the reference"
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 5
    known = settings()
    for key_cell, default_cell, *_ in rows:
        key = key_cell.strip("| `")
        assert key in known, f"README config overview: {key!r} is no config key"
        assert default_cell == f"`{render_value(known[key].default)}`", (
            f"README config overview: {key} defaults to `{render_value(known[key].default)}` "
            f"in recspark/core/config/, not {default_cell}"
        )


def test_local_yaml_holds_only_config_keys_and_departs_from_the_defaults_only_where_listed() -> None:
    # Every key in the file exists: load_config refuses an unknown one, naming it.
    local = load_config(REPO / "conf" / "local.yaml", environ={})
    defaults = Config()
    departures = {
        key: (render_value(value_at(local, key)), render_value(value_at(defaults, key)))
        for key in settings()
        if value_at(local, key) != value_at(defaults, key)
    }
    unexplained = {k: v for k, v in departures.items() if k not in LOCAL_YAML_DEPARTURES}
    assert not unexplained, (
        f"conf/local.yaml departs from the defaults in code, as (yaml, default): {unexplained}; "
        "make them equal, or add the key to LOCAL_YAML_DEPARTURES with the reason"
    )
    assert set(LOCAL_YAML_DEPARTURES) <= set(departures), "a listed departure is no longer one: unlist it"


def test_render_value_writes_yaml_that_reads_back() -> None:
    for value in (None, True, 5, 0.03, 36_500.0, 1e-12, "local[2]", ["als", "ease"], {"view": 1.0}, [], {}):
        assert yaml.safe_load(render_value(value)) == value
