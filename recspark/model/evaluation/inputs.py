"""What `train` and `tune` read: the tables at pinned versions, the catalog, and the split."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.catalog import read_catalog
from recspark.core.config import Config
from recspark.core.gates import Gate, no_gate
from recspark.core.interactions import interest_events
from recspark.core.tables import EVENTS, INTERACTIONS, Lake
from recspark.model.candidates.sources import eligible_items
from recspark.model.evaluation.splits import Split, SplitError, SplitPolicy, choose_split
from recspark.model.families.data import TrainingError


@dataclass
class TrainInputs:
    versions: dict[str, int]  # the Delta versions read: "events", "interactions"
    events: DataFrame
    interactions: DataFrame
    positives: int  # positive user-item pairs of all interactions
    split: Split
    catalog: DataFrame | None
    eligible: DataFrame  # item_id: what may be recommended at all

    def unpersist(self) -> None:
        self.events.unpersist()
        self.eligible.unpersist()
        self.split.unpersist()


def test_policy(config: Config) -> SplitPolicy:
    train = config.train
    return SplitPolicy(
        split=train.split,
        days=train.test_days,
        min_test_users=train.min_test_users,
        max_test_share=train.max_test_share,
        test_fraction=train.test_fraction,
    )


def read_inputs(spark: SparkSession, config: Config, lake: Lake, gate: Gate = no_gate) -> TrainInputs:
    """Pin the tables' versions (logged with the run), gate the interactions, split the events."""
    versions = {"events": lake.version(spark, EVENTS), "interactions": lake.version(spark, INTERACTIONS)}
    # Read several times (the split's counts, then each period): once from storage.
    # Impressions are lists shown, not interest: no split, holdout or model sees them.
    events = interest_events(lake.read(spark, EVENTS, versions["events"])).persist()
    interactions = lake.read(spark, INTERACTIONS, versions["interactions"])
    gate("interactions", interactions, versions["interactions"])
    try:
        split = choose_split(events, test_policy(config))
    except SplitError as exc:
        raise TrainingError(str(exc)) from exc
    catalog = read_catalog(spark, config.catalog.path) if config.catalog.path is not None else None
    positives = interactions.where(F.col("strength") > 0).count()
    eligible = eligible_items(interactions, catalog, config.serve).persist()
    return TrainInputs(versions, events, interactions, positives, split, catalog, eligible)
