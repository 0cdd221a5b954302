"""Typed configuration: YAML in ``conf/``, then environment overrides, then ``--set key=value``.

Every job reads its settings through :func:`load_config`, so an operator's mistake (a typo in a
key, a word where a number belongs) stops the job before Spark starts, with one clear line.
Environment overrides look like ``RECSPARK__TRAIN__RANK=64`` (double underscores separate levels).

The package's entry is :class:`Config`, :func:`load_config` and :class:`ConfigError`, what a job
needs; everything else is imported from its home:

- ``checks``: ConfigError, ``require`` and ``auto``, shared by every section's validation;
- ``runtime``, ``ingest``, ``model``, ``serving``, ``operations``: the sections, each field
  with its default, its docstring (docs/config.md is generated from them) and its bounds;
- ``root``: Config, the sections together; ``loading``: load_config;
- ``coercion``: raw mappings into typed sections; ``overrides``: ``--set`` and the environment.
"""

from recspark.core.config.checks import ConfigError
from recspark.core.config.loading import load_config
from recspark.core.config.root import Config

__all__ = ["Config", "ConfigError", "load_config"]
