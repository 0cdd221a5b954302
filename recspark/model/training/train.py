"""Training: pick the candidate on a validation period, judge it on held-out events against the
baselines and the champion (on the same users, with a paired bootstrap), refit it on all data,
log everything to MLflow, and move the ``champion`` alias only on evidence."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.config.model import BASELINES
from recspark.core.console import printed_to_log
from recspark.core.gates import Gate
from recspark.core.privacy import Tombstones, remove_users_forgotten_since
from recspark.core.registry import (
    CHALLENGER,
    AliasMove,
    champion_move,
    champion_since,
    champion_version,
    configure_mlflow,
    move_alias,
    require_served_model_known,
)
from recspark.core.tables import ALS_USER_FACTORS, EVENTS, INTERACTIONS, USER_IDS, Lake
from recspark.model.candidates.lists import fallback_chain
from recspark.model.candidates.sources import CATEGORY_POPULAR, newest_event_time
from recspark.model.evaluation.holdout import Holdout, Scored, metrics_of
from recspark.model.evaluation.inputs import TrainInputs, read_inputs
from recspark.model.evaluation.splits import split_period
from recspark.model.families.data import TrainingError, training_data
from recspark.model.families.model import ALS, FittedModel, ModelSpec, fit_model, write_model_tables
from recspark.model.training.promotion import (
    ChampionRefit,
    PromotionDecision,
    PromotionRule,
    decide_promotion,
)
from recspark.model.training.report import evaluation_report
from recspark.model.tuning.plan import TunedPlan, read_tuned
from recspark.model.tuning.search import tune_on

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "TrainingError", "train"]


@dataclass
class TrainResult:
    run_id: str
    model_version: str
    family: str
    promoted: bool
    status: str  # promoted | challenger | insufficient_evidence
    reason: str
    metrics: dict[str, float]
    data_versions: dict[str, int]
    test_period: str  # the held-out events, in words
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # The tuning run whose settings this training used (None: the config's own).
    tuned_from_run: str | None = None
    # The champion after this run (this version when promoted) and since when it has held.
    champion_version: str | None = None
    champion_since: datetime | None = None

    def outcome(self) -> str:
        """The decision in one plain sentence: promoted, or why not and which champion stays
        (and for how long it has been unchanged)."""
        if self.promoted:
            return f"promoted to champion: {self.reason}"
        if self.champion_version is None:
            stays = "there is no champion yet (fallback lists are served)"
        elif self.champion_since is None:
            stays = f"champion version {self.champion_version} stays (since an unrecorded time)"
        else:
            days = (datetime.now(timezone.utc) - self.champion_since).total_seconds() / 86_400
            stays = (
                f"champion version {self.champion_version} stays, unchanged for {days:.1f} days since "
                f"{self.champion_since:%Y-%m-%d %H:%M:%S} UTC"
            )
        return f"not promoted ({self.status}): {self.reason}; {stays}"


@contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.time()
    log.info("train: %s ...", name)
    yield
    timings[name] = round(time.time() - started, 2)
    log.info("train: %s done in %.1fs", name, timings[name])


def current_plan(
    spark: SparkSession, config: Config, lake: Lake, inputs: TrainInputs
) -> tuple[TunedPlan | None, str]:
    """The tuned plan to train with, searching again first when it is missing or stale (and
    ``tune.auto``); returns it (None: the configured settings) and why, for the log."""
    if not config.train.use_tuned:
        return None, "train.use_tuned is false: the configured settings"
    plan = read_tuned(spark, config, lake)
    why = "no tuned settings yet" if plan is None else plan.stale_because(config.tune, inputs.positives)
    if why is None:
        assert plan is not None
        return plan, f"settings tuned by run {plan.run_id} ({plan.validation})"
    if not config.tune.auto:
        return plan, f"{why}, and tune.auto is false: " + (
            "the stale plan" if plan else "the configured settings"
        )
    try:
        fresh = tune_on(spark, config, lake, inputs)
    except TrainingError as exc:
        log.warning(
            "train: cannot tune (%s): training with %s",
            exc,
            "the stale plan" if plan else "the configured settings",
        )
        return plan, f"{why}; tuning impossible ({exc})"
    return fresh, f"{why}: tuned now by run {fresh.run_id} ({fresh.validation})"


def candidate_spec(config: Config, plan: TunedPlan | None) -> ModelSpec:
    if plan is not None:
        return plan.spec(config)
    return ModelSpec(
        config.train.families[0], als=config.train, ease_l2=config.ease.l2, ease_signal=config.ease.signal
    )


def champion_spec(config: Config) -> tuple[str, ModelSpec] | None:
    """The champion's version and the settings it was trained with, to refit on this split."""
    champion = champion_version(config.mlflow)
    if champion is None or champion.run_id is None:
        return None
    params = mlflow.get_run(champion.run_id).data.params
    return str(champion.version), ModelSpec.from_params(params, config)


@dataclass
class Judgement:
    """The candidate, the baselines and the champion scored on the held-out events."""

    candidate: Scored
    baselines: dict[str, Scored]
    champion: Scored | None
    decision: PromotionDecision

    def metrics(self, metric: str) -> dict[str, float]:
        named = metrics_of(self.candidate)
        for name, scored in self.baselines.items():
            named |= metrics_of(scored, f"{name}_")
        if self.champion is not None:
            named[f"champion_{metric}"] = self.champion.metrics[metric.removesuffix("_at_k")]
        for reference, comparison in self.decision.comparisons.items():
            named[f"vs_{reference}_{metric}_difference"] = comparison.difference.mean
            named[f"vs_{reference}_{metric}_difference_ci_low"] = comparison.difference.low
            named[f"vs_{reference}_{metric}_difference_ci_high"] = comparison.difference.high
            named[f"vs_{reference}_{metric}_probability"] = comparison.probability
        return named


def judge(
    spark: SparkSession,
    config: Config,
    holdout: Holdout,
    spec: ModelSpec,
    champion: tuple[str, ModelSpec] | None,
) -> Judgement:
    """Fit the candidate (and the champion's settings, when they differ) on the training period
    and score them and the baselines on the same held-out users. With the champion's settings
    the candidate is the champion's refit: the rule then asks no margin over it."""
    model = fit_model(spark, spec, holdout.data, config.ease)
    try:
        candidate = holdout.score_model("model", model, detail=True)
    finally:
        model.unpersist()
    names = [b for b in BASELINES if b != CATEGORY_POPULAR or holdout.catalog is not None]
    if len(names) < len(BASELINES):
        log.warning("train: catalog.path is not set: no category baseline")
    baselines = {name: holdout.score_baseline(name, detail=True) for name in names}
    metric = config.mlflow.promotion_metric
    champion_scored, refit = None, None
    if champion is not None:
        version, settings = champion
        same_settings = settings.params() == spec.params()
        if same_settings:
            champion_scored = candidate  # the same settings on the same split: the same model
        else:
            log.info("train: refitting champion %s (%s) on the same split", version, settings.label())
            rival = fit_model(spark, settings, holdout.data, config.ease)
            try:
                champion_scored = holdout.score_model("champion", rival)
            finally:
                rival.unpersist()
        refit = ChampionRefit(version, champion_scored.values(metric).to_numpy(np.float64), same_settings)
    rule = PromotionRule(
        metric=metric,
        margin=config.mlflow.promotion_margin,
        confidence=config.mlflow.promotion_confidence,
        min_test_users=config.mlflow.min_test_users,
    )
    gating = {}
    for name in config.mlflow.promotion_baselines:
        if name in baselines:
            gating[name] = baselines[name].values(metric).to_numpy(np.float64)
        else:
            log.warning("train: baseline %s was not computed (no catalog?): it does not gate promotion", name)
    decision = decide_promotion(candidate.values(metric).to_numpy(np.float64), gating, refit, rule)
    return Judgement(candidate, baselines, champion_scored, decision)


def train(
    spark: SparkSession, config: Config, lake: Lake, *, gate: Gate, reset_serving: bool = False
) -> TrainResult:
    """The whole training job; stops with TrainingError before touching the registry when the
    data cannot support it, and with TrackingError when the registry cannot be read or does not
    know the model the serving table's lists came from (it would promote without comparison;
    ``reset_serving`` allows it on purpose)."""
    timings: dict[str, float] = {}
    configure_mlflow(config.mlflow)
    spark.sparkContext.setCheckpointDir(lake.path("_checkpoints/als"))
    with _phase(timings, "read"):
        tombstones = Tombstones.read(spark, lake)  # an erasure from here on is undone below
        if not reset_serving:
            require_served_model_known(spark, lake, config.mlflow)
        inputs = read_inputs(spark, config, lake, gate)
        champion = champion_spec(config)  # a registry fault stops the job here, before any fit
    with _phase(timings, "tune"):
        plan, why = current_plan(spark, config, lake, inputs)
        spec = candidate_spec(config, plan)
        log.info("train: candidate %s: %s", spec.label(), why)
    split = inputs.split
    with _phase(timings, "evaluate"):
        data = split_period(
            spark, config, lake, split, all_interactions=inputs.interactions, period="the training period"
        )
        chain = fallback_chain(config.serve, plan.fallback if plan is not None else None)
        holdout = Holdout(spark, config, split, data, inputs.catalog, inputs.eligible, chain=chain)
        try:
            judgement = judge(spark, config, holdout, spec, champion)
        finally:
            holdout.unpersist()
            data.unpersist()
    decision = judgement.decision
    log.info("train: %s: %s", decision.status, decision.reason)
    if champion is None:
        kept: tuple[str | None, datetime | None] = (None, None)
    else:
        kept = champion[0], champion_since(spark, lake, config.mlflow, champion[0])
    with _phase(timings, "fit"):
        as_of = newest_event_time(inputs.interactions)
        assert as_of is not None, "the training period above held min_train_interactions pairs"
        full = training_data(
            spark,
            config,
            lake,
            inputs.interactions,
            as_of=as_of,
            all_interactions=inputs.interactions,
            period="all interactions",
        )
        final = fit_model(spark, spec, full, config.ease)
    metrics = judgement.metrics(config.mlflow.promotion_metric)
    with _phase(timings, "log"):
        run_id, version = _log_run(config, lake, final, judgement, inputs, plan, timings, kept)
        write_model_tables(spark, lake, final, config.mlflow.model_name, version, run_id)
        # A user forgotten while this ran was given an index and factors again: not for long.
        remove_users_forgotten_since(spark, lake, tombstones, (USER_IDS, ALS_USER_FACTORS), "train")
        move = (
            champion_move(config.mlflow, version, "train", decision.reason)
            if decision.promote
            else AliasMove(CHALLENGER, version, None, "train", decision.reason)
        )
        move_alias(spark, lake, config.mlflow, move)
    # The log phase's own duration is known only now that it has ended.
    MlflowClient().log_metric(run_id, "seconds_log", timings["log"])
    final.unpersist()
    full.unpersist()
    inputs.unpersist()
    result = TrainResult(
        run_id=run_id,
        model_version=version,
        family=spec.family,
        promoted=decision.promote,
        status=decision.status,
        reason=decision.reason,
        metrics=metrics,
        data_versions=inputs.versions,
        test_period=split.describe(),
        phase_seconds=timings,
        tuned_from_run=plan.run_id if plan is not None else None,
        champion_version=version if decision.promote else kept[0],
        champion_since=champion_since(spark, lake, config.mlflow, version) if decision.promote else kept[1],
    )
    log.info("train: version %s %s", version, result.outcome())
    return result


def _log_run(
    config: Config,
    lake: Lake,
    final: FittedModel,
    judgement: Judgement,
    inputs: TrainInputs,
    plan: TunedPlan | None,
    timings: dict[str, float],
    kept: tuple[str | None, datetime | None],
) -> tuple[str, str]:
    """One MLflow run: settings, data versions, metrics with intervals, the decision, the report
    and the registered model version; ``kept`` is the champion it was judged against and
    since when it has held. Returns (run id, version)."""
    spec, decision, split = final.spec, judgement.decision, inputs.split
    metric = config.mlflow.promotion_metric
    metrics = judgement.metrics(metric)
    with mlflow.start_run(run_name=f"train-{spec.family}") as run:
        mlflow.log_params(
            {
                **asdict(replace(config.train)),
                **spec.params(),
                **{f"ease_{k}": v for k, v in asdict(config.ease).items() if k not in ("l2", "signal")},
                "interaction_weights": config.interactions.weights,
                "half_life_days": config.interactions.half_life_days,
                "promotion_baselines": ",".join(config.mlflow.promotion_baselines),
                "promotion_margin": config.mlflow.promotion_margin,
                "promotion_confidence": config.mlflow.promotion_confidence,
                "tuned_from_run": plan.run_id if plan is not None else "none",
                **{f"data_version_{name}": v for name, v in inputs.versions.items()},
            }
        )
        mlflow.set_tags(
            {
                "model_family": spec.family,
                "promotion_status": decision.status,
                "promotion_reason": decision.reason[:5000],
                **_champion_tags(kept),
                "events_table": lake.path(EVENTS.name),
                "interactions_table": lake.path(INTERACTIONS.name),
                **split.tags("test"),
            }
        )
        mlflow.log_metrics({**metrics, "train_interactions": float(inputs.positives)})
        mlflow.log_metrics({f"seconds_{phase}": s for phase, s in timings.items()})
        info = _log_model(config, final)
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(tmp) / "evaluation.txt"
            text.write_text(
                "\n".join(f"{name}: {value:.5f}" for name, value in sorted(metrics.items()))
                + f"\n\ndecision: {decision.status}: {decision.reason}\n"
            )
            mlflow.log_artifact(str(text))
            report = Path(tmp) / "evaluation_report.html"
            report.write_text(
                evaluation_report(
                    f"recspark evaluation ({spec.family}): held out {split.describe()}, K={config.train.k}",
                    {spec.family: judgement.candidate, **judgement.baselines},
                    metrics,
                    decision,
                    metric,
                ),
                encoding="utf-8",
            )
            mlflow.log_artifact(str(report))
    version = str(info.registered_model_version)
    client = MlflowClient()
    tags = {
        "model_family": spec.family,
        "promotion_status": decision.status,
        "promotion_reason": decision.reason[:5000],
        **_champion_tags(kept),
    }
    for key, value in tags.items():
        client.set_model_version_tag(config.mlflow.model_name, version, key, value)
    return run.info.run_id, version


def _champion_tags(kept: tuple[str | None, datetime | None]) -> dict[str, str]:
    """The champion a version was judged against, and since when it had held (for a version
    that was not promoted: which model is still served, and how long it has been unchanged)."""
    version, since = kept
    if version is None:
        return {"judged_against_champion": "none"}
    return {
        "judged_against_champion": version,
        "judged_against_champion_since": "unknown" if since is None else since.isoformat(),
    }


def _log_model(config: Config, final: FittedModel):  # -> mlflow ModelInfo
    """Register the version: MLlib's model for ALS; the item-item weights as a pyfunc model for
    EASE and blends (a blend's ALS half is logged beside it, unregistered)."""
    import mlflow.spark

    name = config.mlflow.model_name
    with tempfile.TemporaryDirectory(prefix="recspark-mlflow-") as tmp, printed_to_log(log):
        if final.family == ALS or final.similarity is None:
            assert final.als_model is not None
            return mlflow.spark.log_model(
                final.als_model,
                "model",
                registered_model_name=name,
                dfs_tmpdir=tmp,
                pip_requirements=["pyspark==4.2.0"],
            )
        if final.als_model is not None:
            mlflow.spark.log_model(
                final.als_model, "als_model", dfs_tmpdir=tmp, pip_requirements=["pyspark==4.2.0"]
            )
        from recspark.model.families.pyfunc import ItemItemModel

        weights = Path(tmp) / "similarity.parquet"
        final.similarity_on_driver().to_parquet(weights)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=ItemItemModel(),
            artifacts={"similarity": str(weights)},
            registered_model_name=name,
            pip_requirements=["pandas", "numpy", "scipy", "pyarrow"],
        )
