"""The root of the settings: :class:`Config`, one field per YAML section, each a typed, validated
section from the modules beside this one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from recspark.core.config.coercion import build_section
from recspark.core.config.ingest import IngestConfig, InteractionsConfig, OutcomesConfig
from recspark.core.config.model import EaseConfig, MlflowConfig, TrainConfig, TuneConfig
from recspark.core.config.operations import GenerateConfig, MaintenanceConfig, QualityConfig
from recspark.core.config.overrides import assign, split_assignment
from recspark.core.config.runtime import LakeConfig, SparkConfig
from recspark.core.config.serving import ApiConfig, CatalogConfig, ImpressionsConfig, ServeConfig


@dataclass(frozen=True)
class Config:
    """Every setting recspark reads, one field per YAML section (``train``, ``serve``, ...)."""

    spark: SparkConfig = field(default_factory=SparkConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    interactions: InteractionsConfig = field(default_factory=InteractionsConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ease: EaseConfig = field(default_factory=EaseConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    outcomes: OutcomesConfig = field(default_factory=OutcomesConfig)
    impressions: ImpressionsConfig = field(default_factory=ImpressionsConfig)

    def with_overrides(self, assignments: Iterable[str]) -> Config:
        """A copy with ``key=value`` assignments applied (values parsed as YAML scalars)."""
        raw = dataclasses.asdict(self)
        for assignment in assignments:
            assign(raw, *split_assignment(assignment))
        return build_section(Config, raw, "")
