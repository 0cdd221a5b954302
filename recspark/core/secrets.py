"""Keeping credentials out of what recspark writes down: log lines, table rows, status output.

Config values such as ``mlflow.tracking_uri`` may carry ``scheme://user:password@host`` or a
``?token=...`` query; any message that quotes them (an exception, a log line) must not leak them.
"""

from __future__ import annotations

import logging
import re

_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
_SECRET_PARAMS = re.compile(
    r"(?i)\b(password|passwd|pwd|token|secret|access_key|secret_key|api_key|key)=[^&\s;]+"
)


def redact(text: str) -> str:
    """``text`` with any credentials in URIs (``scheme://user:password@host``) and token-like
    query parameters replaced by ``***``, for logs, table rows and status lines."""
    text = _USERINFO.sub(r"\1***@", text)
    return _SECRET_PARAMS.sub(r"\1=***", text)


class RedactingFilter(logging.Filter):
    """Redacts a record's message and traceback; attach it to a handler so every logger's
    records (including third-party ones quoting a URI) pass through it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: the handler reports it as logging does
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def redact_handlers(logger: logging.Logger) -> None:
    """Attach one :class:`RedactingFilter` to each of ``logger``'s handlers (idempotent)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
