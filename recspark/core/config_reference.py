"""The reference of every config key, read from the section dataclasses of :mod:`recspark.core.config`
(each in its own module): each field's key, type, default and the docstring right under it.
``docs/config.md`` is its output, regenerated with :data:`REGENERATE`; tests/core/test_config.py
fails when that file is stale or a key has no docstring. New sections and keys appear by themselves."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from recspark.core.config import Config

REGENERATE = "python -m recspark.core.config_reference > docs/config.md"


@dataclass(frozen=True)
class Setting:
    key: str  # dotted: ingest.kafka.topic
    type: str  # as annotated: "int | None"
    default: Any
    description: str  # the field's docstring on one line; "" when it has none


@dataclass(frozen=True)
class Section:
    key: str  # dotted: ingest.kafka
    description: str  # the dataclass's docstring on one line; "" when it has none
    settings: tuple[Setting, ...]


def sections(root: type[Any] = Config) -> list[Section]:
    """Every section under ``root``, in declaration order, a nested section after its parent."""
    return list(_sections(root, ""))


def settings(root: type[Any] = Config) -> dict[str, Setting]:
    """Every setting under ``root`` by its dotted key."""
    return {s.key: s for section in sections(root) for s in section.settings}


def value_at(config: Config, key: str) -> Any:
    """The value of a dotted key (``train.rank``) in ``config``."""
    return functools.reduce(getattr, key.split("."), config)


def _sections(cls: type[Any], prefix: str) -> Iterator[Section]:
    hints = typing.get_type_hints(cls)
    described = _field_docstrings(cls)
    own: list[Setting] = []
    nested: list[tuple[type[Any], str]] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            nested.append((hint, key))
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        own.append(Setting(key, annotation, default, described.get(f.name, "")))
    if prefix or own:
        node = _class_nodes(cls.__module__).get(cls.__qualname__)
        docstring = ast.get_docstring(node) if node is not None else None
        yield Section(prefix or "(top level)", _one_line(docstring or ""), tuple(own))
    for section_class, key in nested:
        yield from _sections(section_class, key)


def _field_docstrings(cls: type[Any]) -> dict[str, str]:
    """The string literal right under each annotated field of ``cls`` (an attribute docstring, as
    Sphinx and editors read it), on one line."""
    node = _class_nodes(cls.__module__).get(cls.__qualname__)
    if node is None:
        return {}
    found: dict[str, str] = {}
    for field_node, after in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(field_node, ast.AnnAssign)
            and isinstance(field_node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            found[field_node.target.id] = _one_line(after.value.value)
    return found


@functools.cache
def _class_nodes(module: str) -> dict[str, ast.ClassDef]:
    tree = ast.parse(inspect.getsource(sys.modules[module]))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_value(value: Any) -> str:
    """A value as it is written in YAML (flow style): null, true, 5, 0.03, [als, ease], {a: 1}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 (PyYAML) reads 1e-12 as text, 1.0e-12 as a number
            return text.replace("e", ".0e")
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if text else '""'


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference() -> str:
    """docs/config.md: one table per section."""
    lines = [
        "# Configuration reference",
        "",
        "Every key recspark reads: its type, its default and what it does. Generated from the",
        "dataclasses in `recspark/core/config/`: edit the docstring under a field there, not this",
        "file, then regenerate it:",
        "",
        "```",
        REGENERATE,
        "```",
        "",
        "Set a key in a YAML file (`--conf`, e.g. `conf/local.yaml`), in the environment",
        "(`RECSPARK__SECTION__KEY=value`) or on the command line (`--set section.key=value`); `--set`",
        "wins over the environment, which wins over the file. Values are YAML: `null`, `true`, `[a, b]`.",
    ]
    for section in sections():
        lines += ["", f"## `{section.key}`", ""]
        if section.description:
            lines += [section.description, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for s in section.settings:
            default = f"`{_cell(render_value(s.default))}`"
            lines.append(f"| `{s.key}` | `{_cell(s.type)}` | {default} | {_cell(s.description)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
