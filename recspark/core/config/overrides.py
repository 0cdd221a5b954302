"""Overrides of loaded settings: ``key=value`` assignments (``--set``, values parsed as YAML scalars)
and ``RECSPARK__SECTION__KEY`` environment variables, applied to the raw mapping by dotted key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from recspark.core.config.checks import ConfigError

ENV_PREFIX = "RECSPARK__"


def split_assignment(assignment: str) -> tuple[str, Any]:
    """``key=value`` as the dotted key and its value, parsed as a YAML scalar."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    return key.strip(), _parse_scalar(text)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


# Mappings whose keys are user-chosen (Spark settings, suite names, event types), not a fixed
# schema; a key under them may itself contain dots (spark.conf.spark.sql.shuffle.partitions).
_FREE_MAPPINGS = ("spark.conf", "quality.on_failure", "interactions.weights")


def assign(raw: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``dotted_key`` in ``raw`` to ``value``; a key no section has is refused."""
    for prefix in _FREE_MAPPINGS:
        if dotted_key.startswith(prefix + ".") and len(dotted_key) > len(prefix) + 1:
            node = raw
            for part in prefix.split("."):
                node = node[part]
            node[dotted_key[len(prefix) + 1 :]] = value
            return
    node = raw
    parts = dotted_key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r}")
        node = child
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key {dotted_key!r}")
    node[parts[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> list[str]:
    """``RECSPARK__SECTION__KEY=value`` variables as ``section.key=value`` assignments, sorted by name."""
    assignments = []
    for name, value in sorted(environ.items()):
        if name.upper().startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            assignments.append(f"{key}={value}")
    return assignments
