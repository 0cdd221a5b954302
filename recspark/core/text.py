"""Small text forms shared by every report: an error's first line (redacted) and epoch times."""

from __future__ import annotations

from datetime import datetime, timezone

from recspark.core.secrets import redact

ERROR_LINE_LIMIT = 500


def first_line(exc: BaseException) -> str:
    """The error's first line, credentials redacted, at most ``ERROR_LINE_LIMIT`` characters;
    the type's name when the message is empty."""
    text = str(exc).strip()
    return redact(text.splitlines()[0])[:ERROR_LINE_LIMIT] if text else type(exc).__name__


def utc_text(epoch: float | None) -> str:
    """'2026-12-07 05:38:19' (UTC), or '-' for no time."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def iso_text(epoch: float | None) -> str | None:
    """ISO 8601 with the UTC offset, or None for no time."""
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()
