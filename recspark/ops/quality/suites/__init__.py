"""The quality suites, one module per table: what is expected of it (Great Expectations
expectations, built lazily: great_expectations is heavy and most commands never validate) and the
frame they are checked on. Properties GE cannot express directly on the table (rows per user and
the rows due to each, scores ordered by rank, unavailable items, malformed catalog lines) are
computed in Spark as extra columns of that frame, so one validation run covers a suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame

from recspark.core.config.operations import QUALITY_SUITES
from recspark.core.tables import EVENTS, INTERACTIONS, RECOMMENDATIONS
from recspark.ops.quality.suites import catalog, events, interactions, recommendations

SUITES = QUALITY_SUITES
EVENTS_SUITE, INTERACTIONS_SUITE, RECOMMENDATIONS_SUITE, CATALOG_SUITE = SUITES
# The tables the suites of the same name check (the catalog suite checks the catalog file).
CHECKED_TABLES = (EVENTS, INTERACTIONS, RECOMMENDATIONS)


@dataclass(frozen=True)
class SuiteDefinition:
    """One suite: its expectations, and the frame they are checked on with the expectation
    parameters (built from the table's rows and the suite's checks, see
    :func:`recspark.ops.quality.validation.validate`)."""

    build_expectations: Callable[[], list[Any]]
    validated_frame: Callable[..., tuple[DataFrame, dict[str, Any]]]


SUITE_DEFINITIONS: dict[str, SuiteDefinition] = {
    EVENTS_SUITE: SuiteDefinition(events.build_expectations, events.validated_frame),
    INTERACTIONS_SUITE: SuiteDefinition(interactions.build_expectations, interactions.validated_frame),
    RECOMMENDATIONS_SUITE: SuiteDefinition(
        recommendations.build_expectations, recommendations.validated_frame
    ),
    CATALOG_SUITE: SuiteDefinition(catalog.build_expectations, catalog.validated_frame),
}
