"""What every section's validation uses: :class:`ConfigError` (one line an operator can act on),
:func:`require`, and ``auto``, the value a setting takes when recspark picks it from the data."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem an operator can fix; the message is one line."""


AUTO = "auto"


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def auto_or_days(value: str | float, key: str) -> str | float:
    """``auto`` or a positive number of days (YAML may hand over either as text)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        days = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be 'auto' or a number of days, got {value!r}") from None
    require(days > 0, f"{key} must be > 0 (or 'auto'), got {value!r}")
    return days
