"""The Great Expectations contexts: one per process (and per lake when Data Docs are written),
cached, with every suite registered once; the Spark DataFrame is handed over at run time
(``batch_parameters``), never stored. great_expectations is imported lazily: it is heavy, and most
commands never validate.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from recspark.core.tables import Lake
from recspark.ops.quality.suites import SUITE_DEFINITIONS

log = logging.getLogger(__name__)

# Validation results kept in the file context: the Data Docs index is rebuilt from them on
# every gate, so an unbounded history (a gate per streaming micro-batch) would slow it down.
DOCS_HISTORY = 200
EXAMPLES_PER_FAILURE = 3  # failing rows sampled per failed expectation


class QualityContext:
    """A GE context with every suite registered once; validation runs are serialised."""

    DATASOURCE = "recspark"

    def __init__(self, project_dir: Path | None) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.project_dir = project_dir
        self.docs_dir = project_dir / "data_docs" if project_dir is not None else None
        self.context: Any  # ephemeral or file; used through GE's untyped configuration API
        if project_dir is None:
            self.context = gx.get_context(mode="ephemeral")
        else:
            project_dir.mkdir(parents=True, exist_ok=True)
            self.context = gx.get_context(mode="file", project_root_dir=str(project_dir))
            _configure_docs_site(self.context, project_dir / "data_docs")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.lock = threading.RLock()
        # The frame is persisted (or not) by us around each run: GE would cache it for good.
        source = self.context.data_sources.add_or_update_spark(self.DATASOURCE, persist=False)
        self.definitions = {
            name: self._register(source, name, suite.build_expectations())
            for name, suite in SUITE_DEFINITIONS.items()
        }

    def _register(self, source: Any, name: str, expectations: list[Any]) -> Any:
        """Add (or, in a file context written by an earlier run, replace) one suite."""
        import great_expectations as gx

        try:
            asset = source.get_asset(name)
        except LookupError:
            asset = source.add_dataframe_asset(name)
        try:
            batch = asset.get_batch_definition(name)
        except KeyError:
            batch = asset.add_batch_definition_whole_dataframe(name)
        suite = self.context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
        return self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )

    def validate(self, suite: str, frame: DataFrame, parameters: dict[str, Any]) -> Any:
        """Count bad rows with the whole suite; sample them only for the expectations that failed.

        Sampling unexpected values costs a Spark job per expectation even when there are none,
        so the usual, passing, run does not sample at all.
        """
        definition = self.definitions[suite]
        with self.lock:
            outcome = definition.run(
                batch_parameters={"dataframe": frame},
                expectation_parameters=parameters,
                result_format={"result_format": "BASIC", "partial_unexpected_count": 0},
            )
            if not outcome.success:
                _add_examples(definition, outcome, frame, parameters)
            return outcome

    def keep_recent_results(self, keep: int) -> list[Any]:
        """Drop all but the newest ``keep`` stored results (and their Data Docs pages)."""
        store = self.context.validation_results_store
        with self.lock:
            keys = sorted(store.list_keys(), key=lambda k: k.run_id.run_time)
            stale, recent = keys[: max(len(keys) - keep, 0)], keys[max(len(keys) - keep, 0) :]
            for key in stale:
                store.remove_key(key)
                if self.docs_dir is not None:
                    page = self.docs_dir.joinpath("validations", *key.to_tuple())
                    page.with_name(page.name + ".html").unlink(missing_ok=True)
        return recent

    def build_docs(self, suite: str) -> Path:
        """Render the suite, its newest result and the index; return the index page.

        Only these pages are rendered: a full rebuild would redo every kept result each time.
        """
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
        )

        assert self.docs_dir is not None
        recent = self.keep_recent_results(DOCS_HISTORY)
        newest = [k for k in recent if k.expectation_suite_identifier.name == suite][-1:]
        with self.lock:
            self.context.build_data_docs(
                site_names=[self.DATASOURCE],
                resource_identifiers=[ExpectationSuiteIdentifier(name=suite), *newest],
            )
        return self.docs_dir / "index.html"


def _configure_docs_site(context: Any, docs_dir: Path) -> None:
    """One local Data Docs site under ``docs_dir`` (any other site a user added is removed)."""
    site = {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
    }
    sites = context.list_data_docs_sites()
    for name in [n for n in sites if n != QualityContext.DATASOURCE]:
        context.delete_data_docs_site(name)
    if QualityContext.DATASOURCE in sites:
        context.update_data_docs_site(QualityContext.DATASOURCE, site)
    else:
        context.add_data_docs_site(QualityContext.DATASOURCE, site)


def _add_examples(definition: Any, outcome: Any, frame: DataFrame, parameters: dict[str, Any]) -> None:
    """Fill ``partial_unexpected_list`` of the failed results (in memory, not in the store)."""
    import great_expectations as gx

    failed = [
        r
        for r in outcome.results
        if not r.success
        and not (r.exception_info or {}).get("raised_exception")
        and (r.result or {}).get("unexpected_count")
    ]
    if not failed:
        return
    expectations = []
    for result in failed:
        expectation = result.expectation_config.to_domain_obj()
        expectation.id = None  # a copy, free to join the (unsaved) sampling suite
        expectations.append(expectation)
    sample_suite = gx.ExpectationSuite(name=f"{definition.suite.name}_samples", expectations=expectations)
    try:
        batch = definition.data.get_batch(batch_parameters={"dataframe": frame})
        samples = batch.validate(
            sample_suite,
            result_format={
                "result_format": "BASIC",
                "partial_unexpected_count": EXAMPLES_PER_FAILURE,
            },
            expectation_parameters=parameters,
        )
    except Exception as exc:  # examples are a convenience; the verdict stands without them
        log.warning("quality: could not sample failing rows: %s", str(exc).splitlines()[0])
        return
    for result, sample in zip(failed, samples.results, strict=False):
        examples = (sample.result or {}).get("partial_unexpected_list")
        if examples:
            result.result["partial_unexpected_list"] = examples


_CONTEXTS: dict[Path | None, QualityContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def quality_context(project_dir: Path | None = None) -> QualityContext:
    """The context of ``project_dir`` (None: in memory, nothing kept), built once per process."""
    with _CONTEXTS_LOCK:
        if project_dir not in _CONTEXTS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                _CONTEXTS[project_dir] = QualityContext(project_dir)
        return _CONTEXTS[project_dir]


def quality_dir(lake: Lake) -> Path | None:
    """``<lake.root>/_quality`` when the lake is on the local file system, else None."""
    root = lake.root
    if root.startswith("file://"):
        root = root.removeprefix("file://")
    elif "://" in root or root.startswith("file:"):
        return None
    return Path(root) / "_quality"
