"""Loading the settings a job runs with: YAML (or the built-in defaults), then the environment's
``RECSPARK__`` overrides, then ``--set key=value``, each later one winning."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from recspark.core.config.checks import ConfigError
from recspark.core.config.coercion import build_section
from recspark.core.config.overrides import env_overrides
from recspark.core.config.root import Config


def load_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read YAML (or the built-in defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}".splitlines()[0]) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a mapping at the top level")
        raw = loaded or {}
    try:
        base = build_section(Config, raw, "")
    except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(str(exc)) from exc
    env = os.environ if environ is None else environ
    return base.with_overrides([*env_overrides(env), *overrides])
