"""What ``train`` and ``tune`` fit and how a candidate is promoted: ``train.*``, ``ease.*``,
``tune.*`` and ``mlflow.*``, with the families, splits, ranking metrics and baselines they name."""

from __future__ import annotations

from dataclasses import dataclass, field

from recspark.core.config.checks import AUTO, auto_or_days, require

# The model families `train` can fit; "blend" (ALS + EASE) is formed from the first two.
FAMILIES = ("als", "ease")
# How `train.split` and `tune.validation_split` may hold out the future.
SPLITS = (AUTO, "time", "per_user")
# What EASE's X may hold (`ease.signal`, `tune.ease_signal`).
EASE_SIGNALS = ("preference", "binary")


# The ranking metrics evaluation computes at each K; tuning and promotion rank models by one.
RANKING_METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")


def _require_ranking_metric(metric: str, key: str) -> None:
    names = [m + "_at_k" for m in RANKING_METRICS]
    require(metric in names, f"{key} must be one of {names}, got {metric!r}")


# The baselines every trained model is compared with (metric prefixes in MLflow), as reports
# and promotion reasons name them.
BASELINE_LABELS = {"popular": "most popular", "category_popular": "popular in favourite categories"}
BASELINES = tuple(BASELINE_LABELS)


@dataclass(frozen=True)
class TrainConfig:
    """`recspark train`: the competing model families, the held-out test period, ALS's settings."""

    rank: int = 32
    """ALS rank (unless tuning found a better one)."""
    reg_param: float = 0.03
    """ALS regularisation (unless tuning found a better one)."""
    alpha: float = 1.0
    """ALS confidence scale of implicit feedback (unless tuning found a better one)."""
    max_iter: int = 10
    """ALS iterations."""
    seed: int = 42
    """ALS random seed."""
    num_user_blocks: int = 4
    """ALS partitioning: user blocks."""
    num_item_blocks: int = 4
    """ALS partitioning: item blocks."""
    confidence: str = "log"
    """`log` feeds `log1p(strength)` to ALS, damping heavy repeat viewers; `linear` feeds `strength`."""
    families: list[str] = field(default_factory=lambda: ["als", "ease"])
    """The families that compete: `als` (Spark MLlib ALS, implicit feedback) and `ease` (item-item EASE
    weights); each is tuned on the validation period and the best there is the candidate."""
    blend: bool = True
    """With both families, a score blend of the two competes too."""
    split: str = AUTO
    """How the future is held out: `time` (the last `test_days`), `per_user` (each user's newest
    `test_fraction` of events), or `auto` (the shortest newest period with `min_test_users` test users, at
    most `max_test_share` of the events; else per user)."""
    test_days: str | float = AUTO
    """The test period's length in days, or `auto`: the shortest newest period holding `min_test_users`
    users with a new item."""
    min_test_users: int = 500
    """What an `auto` test period must hold."""
    max_test_share: float = 0.25
    """An `auto` test period holds at most this share of the events; else the split is per user."""
    test_fraction: float = 0.2
    """Per-user split: each user's newest share of events."""
    k: int = 10
    """K of the ranking metrics."""
    min_train_interactions: int = 100
    """Refuse to train on fewer positive pairs."""
    checkpoint_interval: int = 5
    """ALS checkpoints its lineage every this many iterations (long fits on a cluster)."""
    favourite_categories: int = 3
    """The category baseline recommends popular items from a user's this many favourite categories (by
    training-period strength), then fills from overall popularity."""
    use_tuned: bool = True
    """Apply the plan `recspark tune` wrote (its family and settings win over `train.*`); false ignores it."""
    driver_max_pairs: int = 1_000_000
    """A split whose training period has at most this many positive user-item pairs is evaluated on the
    driver (the same lists and metrics as in Spark, without a Spark job per model), and tuning fits its
    trials there (NumPy, MLlib's ALS objective, ALS warm-started); larger: in Spark, each trial fitted by
    MLlib from scratch. `0`: always Spark."""

    def __post_init__(self) -> None:
        for name in ("rank", "max_iter", "num_user_blocks", "num_item_blocks", "k", "favourite_categories"):
            require(getattr(self, name) > 0, f"train.{name} must be > 0")
        require(self.reg_param >= 0, "train.reg_param must be >= 0")
        require(self.alpha > 0, "train.alpha must be > 0")
        object.__setattr__(self, "test_days", auto_or_days(self.test_days, "train.test_days"))
        require(self.confidence in ("log", "linear"), "train.confidence must be 'log' or 'linear'")
        require(
            isinstance(self.families, list)
            and len(self.families) > 0
            and set(self.families) <= set(FAMILIES)
            and len(set(self.families)) == len(self.families),
            f"train.families must be a non-empty list drawn from {list(FAMILIES)}, got {self.families!r}",
        )
        require(self.split in SPLITS, f"train.split must be one of {list(SPLITS)}, got {self.split!r}")
        require(self.min_test_users > 0, "train.min_test_users must be > 0")
        require(0 < self.max_test_share < 1, "train.max_test_share must be in (0, 1)")
        require(0 < self.test_fraction < 1, "train.test_fraction must be in (0, 1)")
        require(
            isinstance(self.driver_max_pairs, int) and self.driver_max_pairs >= 0,
            f"train.driver_max_pairs must be an integer >= 0, got {self.driver_max_pairs!r}",
        )


@dataclass(frozen=True)
class EaseConfig:
    """The item-item family (EASE): one item x item inverse on the driver, so it is capped."""

    l2: float = 300.0
    """The ridge penalty λ."""
    max_items: int = 10_000
    """Only the most popular items get item-item weights: the driver inverts a `max_items`² matrix."""
    min_item_users: int = 2
    """Items with fewer users have too little co-occurrence to learn from: no weights."""
    neighbours: int = 500
    """Weights kept (and served) per item, largest absolute weight first (`item_similarity`)."""
    signal: str = "preference"
    """What X holds: `preference`, the signal ALS sees (`log1p(strength)` with `train.confidence: log`), or
    `binary` (1 for every positive pair)."""

    def __post_init__(self) -> None:
        require(
            self.signal in EASE_SIGNALS,
            f"ease.signal must be one of {list(EASE_SIGNALS)}, got {self.signal!r}",
        )
        require(self.l2 > 0, "ease.l2 must be > 0")
        require(self.max_items > 1, "ease.max_items must be > 1")
        require(self.min_item_users >= 1, "ease.min_item_users must be >= 1")
        require(self.neighbours > 0, "ease.neighbours must be > 0")


@dataclass(frozen=True)
class MlflowConfig:
    """MLflow: the tracking store, the model registry and the promotion rule."""

    tracking_uri: str = "sqlite:///.recspark/mlflow.db"
    """Tracking store and model registry (database-backed, so the registry works)."""
    experiment: str = "recspark"
    """The experiment runs are logged to."""
    model_name: str = "recspark-als"
    """The registered model."""
    artifact_location: str | None = ".recspark/mlartifacts"
    """Where run artifacts go for a new experiment; null: the tracking server decides."""
    promotion_metric: str = "ndcg_at_k"
    """The metric the promotion rule compares (validated when the config loads)."""
    promotion_margin: float = 0.0
    """The relative lead (>= 0) the candidate needs over the champion and the baselines on
    `promotion_metric`."""
    promotion_confidence: float = 0.5
    """Share of paired bootstrap resamples of the test users in which the candidate must lead each
    reference by the margin (0.5: more likely than not; 0.95: a confident lead)."""
    min_test_users: int = 50
    """Fewer test users (or a NaN metric) is insufficient evidence: nothing is promoted, the champion
    stays."""
    promotion_baselines: list[str] = field(default_factory=lambda: ["popular"])
    """Baselines the candidate must beat by the margin as well as the champion; add `category_popular` to
    also demand a lead over most-popular-in-favourite-categories."""

    def __post_init__(self) -> None:
        _require_ranking_metric(self.promotion_metric, "mlflow.promotion_metric")
        require(
            self.promotion_margin >= 0,
            f"mlflow.promotion_margin must be >= 0 (a relative lead), got {self.promotion_margin!r}",
        )
        require(
            0.5 <= self.promotion_confidence < 1,
            f"mlflow.promotion_confidence must be in [0.5, 1), got {self.promotion_confidence!r}",
        )
        require(self.min_test_users > 0, "mlflow.min_test_users must be > 0")
        baselines = self.promotion_baselines
        require(
            isinstance(baselines, list) and all(b in BASELINES for b in baselines),
            f"mlflow.promotion_baselines must be a list drawn from {list(BASELINES)}, got {baselines!r}",
        )


@dataclass(frozen=True)
class TuneConfig:
    """`recspark tune`: a small search on a validation split carved from the training period."""

    rank: list[int] = field(default_factory=lambda: [16, 32, 64])
    """The ALS grid's ranks; a grid of more than `max_trials` points is sampled down to that many."""
    reg_param: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1])
    """The ALS grid's regularisation values."""
    alpha: list[float] = field(default_factory=lambda: [1.0, 5.0])
    """The ALS grid's confidence scales."""
    ease_l2: list[float] = field(default_factory=lambda: [100.0, 300.0, 1000.0])
    """The EASE grid's ridge penalties."""
    ease_signal: list[str] = field(default_factory=lambda: list(EASE_SIGNALS))
    """The EASE grid's signals (`preference`, `binary`)."""
    blend_weight: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    """ALS's share of a blend's standardised scores, each in (0, 1)."""
    max_trials: int = 6
    """Grid points tried per family (drawn at random with `seed` from a larger grid)."""
    seed: int = 42
    """The seed of that draw."""
    validation_days: str | float = AUTO
    """The validation period's length for a `time` or `auto` split: a number of days, or `auto` (by
    `train.min_test_users`); carved out of the training period like the test period."""
    validation_split: str = "per_user"
    """`per_user`: each user's newest events before the test period (the most evidence); `time` or `auto`:
    a period, as `train.split`."""
    metric: str = "ndcg_at_k"
    """What the best trial maximises: `precision`, `recall`, `ndcg`, `map` or `hit_rate`, `_at_k`."""
    auto: bool = True
    """`train` runs the search itself when no tuned settings exist or they are stale (older than
    `max_age_days`, or the interactions grew by more than `max_growth` since), within `budget_seconds`."""
    budget_seconds: float = 600.0
    """A hard bound on tuning: no trial starts that its estimate says cannot finish inside it (estimated
    from the trials measured so far, before them from the data's size); the best so far wins, and a budget
    with no room for one trial leaves `train` with the configured settings."""
    max_age_days: float = 7.0
    """Tuned settings older than this are stale."""
    max_growth: float = 0.5
    """Tuned settings are stale once the interactions grew by more than this share since."""
    best_params_path: str | None = None
    """Where the best settings go (and `train` looks); null: `<lake.root>/_tuning/best_params.json`."""

    def __post_init__(self) -> None:
        grids = (
            ("rank", int, 1),
            ("reg_param", float, 0),
            ("alpha", float, 1e-12),
            ("ease_l2", float, 1e-12),
            ("blend_weight", float, 1e-12),
        )
        for name, kind, low in grids:
            values = getattr(self, name)
            ok = (
                isinstance(values, list)
                and len(values) > 0
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
                and all(v >= low for v in values)
                and (kind is float or all(isinstance(v, int) for v in values))
            )
            require(ok, f"tune.{name} must be a non-empty list of numbers >= {low:g}, got {values!r}")
            object.__setattr__(self, name, [kind(v) for v in values])
        require(self.max_trials > 0, "tune.max_trials must be > 0")
        require(
            self.validation_split in SPLITS,
            f"tune.validation_split must be one of {list(SPLITS)}, got {self.validation_split!r}",
        )
        require(
            isinstance(self.ease_signal, list)
            and bool(self.ease_signal)
            and set(self.ease_signal) <= set(EASE_SIGNALS),
            f"tune.ease_signal must be a non-empty list drawn from {list(EASE_SIGNALS)}, "
            f"got {self.ease_signal!r}",
        )
        require(all(w < 1 for w in self.blend_weight), "tune.blend_weight values must be in (0, 1)")
        object.__setattr__(
            self, "validation_days", auto_or_days(self.validation_days, "tune.validation_days")
        )
        require(self.budget_seconds > 0, "tune.budget_seconds must be > 0")
        require(self.max_age_days > 0, "tune.max_age_days must be > 0")
        require(self.max_growth > 0, "tune.max_growth must be > 0")
        _require_ranking_metric(self.metric, "tune.metric")
