"""Attribution: what shoppers did with the lists they were shown (``recommendation_outcomes``).

The rules (docs/how-it-works.md, "Outcomes"):

- An **impression** (one per served list: its ``event_id`` is its ``recommendation_id``) counts
  once for each position of its ``items``, on the UTC **day its list was served** (the id's
  time), under its ``model_version``, ``variant``, ``list`` and the position's ``sources`` entry.
- A view, add-to-cart or purchase carrying that ``recommendation_id`` is **attributed** when it
  names an item of the list and happens within the window: from ``SERVED_AT_TOLERANCE`` before the
  list was served to ``outcomes.attribution_window_hours`` after. It counts for the impression's
  row of that item's position, whatever day it happened.
- ``clicks``, ``add_to_carts``, ``purchases``: the positions with at least one attributed view,
  add-to-cart, purchase (repeats from the same list count once; a retried event_id is one event
  anyway). ``revenue``: every attributed purchase, quantity (``value``, else 1) x the item's
  catalog price when the purchase is credited.

Exactness in any arrival order: the figures of one list are a function ``f`` of the stored
events that carry its id. A batch changes the table by ``f(after) - f(before)`` for the ids it
touches, where *before* is what was stored before the batch (minus the batch's own earlier
attempt, as dedup does) and *after* adds the batch's new events. Over all batches the changes
add up to ``f`` of everything stored: a click before its impression counts when the impression
arrives, a late impression collects the clicks already stored. The id's time bounds where the
stored events of a list can be (impression within the tolerance, attributed events within the
window), so *before* is read from a few days of ``events``, not the whole table.

Issues, as the change in how many stored events are in each state (ingest_metrics.outcome_issues;
summed over batches, the standing count): attributed events with no impression yet, for an item
not in the list, purchases without a catalog price. Events outside the window are counted when
they arrive (their state never changes), and so are credits to a variant the serving table no
longer has (an ended experiment: the credit stays with that variant's own rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recspark.core.contract import ATTRIBUTED_EVENT_TYPES, IMPRESSION
from recspark.core.recommendation_ids import SERVED_AT_TOLERANCE, served_at_column
from recspark.core.tables import RECOMMENDATION_OUTCOMES_SCHEMA, any_of

KEY = ("day", "model_version", "variant", "list", "source", "position")
COUNTS = ("impressions", "clicks", "add_to_carts", "purchases")
METRICS = (*COUNTS, "revenue")
# What each attributed event type adds to (a position with at least one).
CREDITS = {"view": "clicks", "add_to_cart": "add_to_carts", "purchase": "purchases"}
assert set(CREDITS) == set(ATTRIBUTED_EVENT_TYPES)

NO_IMPRESSION = "no impression (yet)"
NOT_IN_LIST = "item not in the list"
NO_PRICE = "purchase without a catalog price"
OUTSIDE_WINDOW = "outside the attribution window"
ENDED_VARIANT = "credited to a variant no longer served"
ISSUES = (NO_IMPRESSION, NOT_IN_LIST, NO_PRICE, OUTSIDE_WINDOW, ENDED_VARIANT)

# The columns attribution reads from events.
COLUMNS = (
    "event_id",
    "event_time",
    "item_id",
    "event_type",
    "value",
    "recommendation_id",
    "items",
    "list",
    "model_version",
    "variant",
    "sources",
)
# Up to this many ids, the look-up of stored events names each (Delta checks every name against
# every file's min/max, and time-ordered ids skip most files); more ids are read as a range.
NAMED_IDS_MAX = 64


@dataclass(frozen=True)
class AttributionWindow:
    """When an attributed event counts for the list it names: within [served - tolerance,
    served + after] of the list's time."""

    after: timedelta
    tolerance: timedelta = SERVED_AT_TOLERANCE

    def contains(self, event_time: Column, served_at: Column) -> Column:
        seconds = event_time.cast("double") - served_at.cast("double")
        return seconds.between(-self.tolerance.total_seconds(), self.after.total_seconds())

    def stored_days(self, first_served: datetime, last_served: datetime) -> tuple[datetime, datetime]:
        """The event times the stored events of lists served in [first, last] can have."""
        return first_served - self.tolerance, last_served + max(self.after, self.tolerance)


def relevant(events: DataFrame) -> DataFrame:
    """The events attribution reads (impressions and the attributed types with an id), with
    ``served_at``, the time of the list they name."""
    kind = F.col("event_type")
    return (
        events.where(F.col("recommendation_id").isNotNull())
        .where(kind.isin(IMPRESSION, *ATTRIBUTED_EVENT_TYPES))
        .select(*COLUMNS)
        .withColumn("served_at", served_at_column(F.col("recommendation_id")))
    )


def attributable(window: AttributionWindow) -> Column:
    """Whether an event of :func:`relevant` can count: an impression, or an attributed event
    within its list's window (the others never count, whatever else arrives)."""
    kind = F.col("event_type")
    return (kind == IMPRESSION) | window.contains(F.col("event_time"), F.col("served_at"))


def stored_relevant(
    events: DataFrame,
    touched: DataFrame,
    ids: list[str] | None,
    times: tuple[datetime, datetime],
    window: AttributionWindow,
    app_id: str,
    batch_id: int,
) -> DataFrame:
    """The stored events of the ``touched`` lists (a frame of ``recommendation_id``) that can
    count for them, minus this very batch's earlier attempt. ``ids``: the touched ids when few
    (named one by one for file skipping), else None; ``times``: the first and last served_at."""
    earliest, latest = window.stored_days(*times)
    first_day, last_day = earliest.date(), latest.date()
    months = sorted(
        {(first_day + timedelta(days=k)).replace(day=1) for k in range((last_day - first_day).days + 1)}
    )
    rid = F.col("recommendation_id")
    named = any_of(rid, ids) if ids is not None else F.lit(True)
    candidates = (
        events.where(F.col("event_month").isin(months) | F.col("event_month").isNull())
        .where(F.col("event_date").between(first_day, last_day))
        .where(rid.isNotNull() & named)
        .where(~((F.col("ingest_app_id") == app_id) & (F.col("ingest_batch_id") == batch_id)))
    )
    keys = F.broadcast(touched) if ids is not None else touched
    return relevant(candidates.join(keys, "recommendation_id", "left_semi"))


def _day(served_at: Column) -> Column:
    return F.to_date(served_at)


def contributions(
    events: DataFrame, prices: DataFrame | None, window: AttributionWindow
) -> tuple[DataFrame, DataFrame]:
    """``f``: the outcome rows (KEY + METRICS) and the issue counts (``reason``, ``events``) of the
    lists whose events ``events`` (the output of :func:`relevant`) holds, exactly as if nothing
    else were stored. Events outside the window are left out (they never count; see the module)."""
    impressions = events.where(F.col("event_type") == IMPRESSION).select(
        "recommendation_id",
        _day(F.col("served_at")).alias("day"),
        "model_version",
        "variant",
        "list",
        "items",
        "sources",
    )
    shown = (
        impressions.groupBy("day", "model_version", "variant", "list", "sources", F.size("items").alias("n"))
        .agg(F.count(F.lit(1)).alias("lists"))
        .select("*", F.explode(F.sequence(F.lit(1), F.col("n"))).alias("position"))
        .select(
            "day",
            "model_version",
            "variant",
            "list",
            F.try_element_at("sources", F.col("position")).alias("source"),
            F.col("position").cast("int").alias("position"),
            F.col("lists").alias("impressions"),
        )
    )
    acts = events.where(F.col("event_type").isin(*ATTRIBUTED_EVENT_TYPES)).where(
        window.contains(F.col("event_time"), F.col("served_at"))
    )
    matched = acts.alias("a").join(impressions.alias("i"), "recommendation_id", "left")
    position = F.array_position(F.col("i.items"), F.col("a.item_id")).cast("int")
    located = matched.select(
        "recommendation_id",
        F.col("a.event_type").alias("event_type"),
        F.col("a.item_id").alias("item_id"),
        F.coalesce(F.col("a.value"), F.lit(1.0)).alias("quantity"),
        F.col("i.items").isNotNull().alias("has_impression"),
        position.alias("position"),
        "i.day",
        "i.model_version",
        "i.variant",
        "i.list",
        F.try_element_at(F.col("i.sources"), F.when(position > 0, position)).alias("source"),
    )
    credited = located.where(F.col("position") > 0)
    purchase = F.col("event_type") == "purchase"
    if prices is not None:
        credited = credited.join(F.broadcast(prices), "item_id", "left")
    else:
        credited = credited.withColumn("price", F.lit(None).cast("double"))
    per_position = credited.groupBy("recommendation_id", *KEY).agg(
        *[F.max(F.when(F.col("event_type") == t, 1).otherwise(0)).alias(c) for t, c in CREDITS.items()],
        F.sum(
            F.when(purchase & F.col("price").isNotNull(), F.col("quantity") * F.col("price")).otherwise(0.0)
        ).alias("revenue"),
        F.count_if(purchase & F.col("price").isNull()).alias("unpriced"),
    )
    acted = per_position.groupBy(*KEY).agg(
        F.lit(0).cast("long").alias("impressions"),
        *[F.sum(c).cast("long").alias(c) for c in CREDITS.values()],
        F.sum("revenue").alias("revenue"),
    )
    rows = (
        shown.withColumns({c: F.lit(0).cast("long") for c in CREDITS.values()})
        .withColumn("revenue", F.lit(0.0))
        .unionByName(acted)
    )
    issues = (
        located.select(
            F.when(~F.col("has_impression"), F.lit(NO_IMPRESSION))
            .when(F.col("position") == 0, F.lit(NOT_IN_LIST))
            .alias("reason")
        )
        .where(F.col("reason").isNotNull())
        .groupBy("reason")
        .agg(F.count(F.lit(1)).alias("events"))
        .unionByName(per_position.select(F.lit(NO_PRICE).alias("reason"), F.col("unpriced").alias("events")))
    )
    return rows, issues


def outcome_changes(
    before: DataFrame, new: DataFrame, prices: DataFrame | None, window: AttributionWindow
) -> DataFrame:
    """``f(before + new) - f(before)``, the change a batch of ``new`` events (:func:`attributable`)
    makes, ``before`` being the stored events of the lists it touches: in one frame (one pass),
    the changed outcome rows (KEY + METRICS, ``reason`` null) and the changes of the issue
    counts (``reason``, ``events``); :func:`changed_rows` and :func:`issue_changes` split it."""

    def facts(events: DataFrame, sign: int) -> DataFrame:
        rows, issues = contributions(events, prices, window)
        return (
            rows.withColumn("reason", F.lit(None).cast("string"))
            .unionByName(issues, allowMissingColumns=True)
            .withColumn("_sign", F.lit(sign))
        )

    signed = facts(before.unionByName(new), 1).unionByName(facts(before, -1))
    return signed.groupBy(*KEY, "reason").agg(
        *[F.sum(F.col(m) * F.col("_sign")).cast("long").alias(m) for m in (*COUNTS, "events")],
        F.sum(F.col("revenue") * F.col("_sign")).alias("revenue"),
    )


def changed_rows(changes: DataFrame) -> DataFrame:
    """The outcome rows :func:`outcome_changes` changes (KEY + METRICS)."""
    changed = F.lit(False)
    for metric in METRICS:
        changed = changed | (F.col(metric) != 0)
    return changes.where(F.col("reason").isNull() & changed).select(*KEY, *METRICS)


def issue_changes(changes: DataFrame) -> dict[str, int]:
    """The changes of the issue counts in :func:`outcome_changes`' result, by reason."""
    rows = changes.where(F.col("reason").isNotNull()).select("reason", "events").collect()
    return {r["reason"]: int(r["events"] or 0) for r in rows}


def ended_variant_credits(changes: DataFrame, live: set[str | None]) -> int:
    """The attributed events in ``changes`` credited to a variant the serving table no longer has
    (an experiment that ended after the list was served). They stay credited to their own
    variant; this only counts them."""
    named = [v for v in live if v is not None]
    ended = (
        F.col("variant").isNotNull() & ~F.col("variant").isin(*named)
        if named
        else F.col("variant").isNotNull()
    )
    row = (
        changes.where(ended).agg(F.sum(F.col("clicks") + F.col("add_to_carts") + F.col("purchases"))).first()
    )
    return int(row[0] or 0) if row is not None else 0


def merge_changes(target: DeltaTable, changes: DataFrame) -> int | None:
    """Add ``changes`` into ``recommendation_outcomes`` (rows matched on the whole key, nulls
    equal); the rows written, or None when Delta skipped the MERGE as already committed (the
    caller sets the batch's txnAppId/txnVersion)."""
    t, s = "t", "s"
    condition = " AND ".join(f"{t}.`{k}` <=> {s}.`{k}`" for k in KEY)
    updates: dict[str, str | Column] = {m: f"{t}.`{m}` + {s}.`{m}`" for m in METRICS}
    updates["updated_at"] = f"{s}.updated_at"
    inserts: dict[str, str | Column] = {c: f"{s}.`{c}`" for c in RECOMMENDATION_OUTCOMES_SCHEMA.fieldNames()}
    source = changes.select(*[F.col(c) for c in (*KEY, *METRICS)], F.current_timestamp().alias("updated_at"))
    metrics = (
        target.alias(t)
        .merge(source.alias(s), condition)
        .whenMatchedUpdate(set=updates)
        .whenNotMatchedInsert(values=inserts)
        .execute()
        .first()
    )
    return int(metrics["num_affected_rows"]) if metrics is not None else None
