"""Keeping credentials out of what recspark writes down: log lines, tracebacks, table rows, status
output, the JVM's logs and the output of ``deploy/submit.sh``.

Config values such as ``mlflow.tracking_uri`` may carry ``scheme://user:password@host`` or a
``?token=...`` query; any text that quotes them (an exception, a log line) must not leak them.
The patterns are defined once, in :data:`SECRET_PATTERNS`, and every path applies them:
:func:`redact` (table rows, status), :func:`redact_standard_streams` (whatever the Python process
prints: logs, uncaught tracebacks, MLflow's messages), :func:`log4j2_properties` (the JVM's console
log) and ``python -m recspark.core.secrets``, a stdin-to-stdout filter for scripts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

# Java's \s: the patterns spell whitespace out, since \s, \b and \w mean different things in
# Python's re (Unicode) and java.util.regex (ASCII, or Unicode-aware \b depending on the JDK).
_WHITESPACE = r" \t\n\x0B\f\r"


@dataclass(frozen=True)
class SecretPattern:
    """A regular expression read alike by Python's ``re`` (with ``re.ASCII``) and
    ``java.util.regex``; a match is replaced by its group 1 followed by ``replacement_tail``."""

    regex: str
    replacement_tail: str

    def python(self) -> re.Pattern[str]:
        return re.compile(self.regex, re.ASCII)

    def python_replacement(self) -> str:
        return r"\g<1>" + self.replacement_tail

    def java_replacement(self) -> str:
        return "$1" + self.replacement_tail


SECRET_PATTERNS = (
    # scheme://user:password@host -> scheme://***@host
    SecretPattern(rf"([A-Za-z][A-Za-z0-9+.-]*://)[^/@{_WHITESPACE}]+@", "***@"),
    # ?token=abc, password=..., api_key=... -> token=***; a value already *** is left alone, so
    # redacting twice changes nothing (not even the quote after it in a JSON line).
    SecretPattern(
        r"(?i)(?<![A-Za-z0-9_])(password|passwd|pwd|token|secret|access_key|secret_key|api_key|key)"
        rf"=(?!\*\*\*(?![A-Za-z0-9]))[^&;{_WHITESPACE}]+",
        "=***",
    ),
)
_COMPILED = tuple((p.python(), p.python_replacement()) for p in SECRET_PATTERNS)


def redact(text: str) -> str:
    """``text`` with any credentials in URIs (``scheme://user:password@host``) and token-like
    query parameters replaced by ``***``, for logs, table rows and status lines."""
    for pattern, replacement in _COMPILED:
        text = pattern.sub(replacement, text)
    return text


class RedactingStream:
    """A text stream (``sys.stdout``, ``sys.stderr``) whose writes reach ``target`` redacted, a
    whole line at a time: a partial line waits for its newline or a flush, so a secret is never
    cut in two. Anything else (``fileno``, ``isatty``, ``encoding``) is the target's."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            end = self._pending.rfind("\n") + 1
            if end:
                lines, self._pending = self._pending[:end], self._pending[end:]
                self.target.write(redact(lines))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.target.write(redact(self._pending))
                self._pending = ""
        self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def redact_standard_streams() -> None:
    """Redact everything this process prints through ``sys.stdout`` and ``sys.stderr`` from now
    on: log lines (MLflow's own handler included), tracebacks of uncaught exceptions (in any
    thread), MLflow's run links, plain prints. Idempotent. The JVM writes to the file descriptors
    itself: its lines are redacted by :func:`log4j2_properties`."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))


# ---------------------------------------------------------------------------- the JVM's logs

# log4j2 reads this environment variable as its ``log4j2.configurationFile`` setting.
LOG4J2_CONFIG_ENV = "LOG4J_CONFIGURATION_FILE"

# The levels of Spark's own log4j2-defaults.properties for noisy third parties; the root at WARN,
# what pyspark and recspark's session builder set.
_QUIET_LOGGERS = {
    "org.sparkproject.jetty": "warn",
    "org.sparkproject.jetty.util.component.AbstractLifeCycle": "error",
    "org.apache.hadoop.hive.metastore.RetryingHMSHandler": "fatal",
    "org.apache.hadoop.hive.metastore.ObjectStore": "error",
    "org.apache.parquet.CorruptStatistics": "error",
    "parquet.CorruptStatistics": "error",
}


def log4j2_layout_pattern() -> str:
    """A log4j2 ``PatternLayout`` pattern printing Spark's usual line, with the message and its
    stack trace passed through every :data:`SECRET_PATTERNS` (nested ``%replace`` converters)."""
    body = "%m%n%ex"
    for pattern in SECRET_PATTERNS:
        # log4j2 finds a converter's options by counting braces; the patterns have none.
        if any(c in pattern.regex + pattern.java_replacement() for c in "{}"):
            raise ValueError(f"a secret pattern cannot hold braces in a log4j2 layout: {pattern.regex}")
        body = f"%replace{{{body}}}{{{pattern.regex}}}{{{pattern.java_replacement()}}}"
    return f"%d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: {body}"


def log4j2_properties() -> str:
    """A log4j2 configuration (properties format) for Spark's driver and executors: Spark's
    console logging on stderr with every line redacted. ``alwaysWriteExceptions`` is off, or
    log4j2 would print each stack trace a second time, outside the ``%replace``."""
    lines = [
        "# Written by recspark.core.secrets: Spark's console log with credentials redacted.",
        "status = warn",
        "rootLogger.level = warn",
        "rootLogger.appenderRef.stderr.ref = console",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.target = SYSTEM_ERR",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.alwaysWriteExceptions = false",
        # Properties files read a backslash as an escape: double them.
        "appender.console.layout.pattern = " + log4j2_layout_pattern().replace("\\", "\\\\"),
    ]
    for i, (name, level) in enumerate(_QUIET_LOGGERS.items()):
        lines += [f"logger.quiet{i}.name = {name}", f"logger.quiet{i}.level = {level}"]
    return "\n".join(lines) + "\n"


def log4j2_config_file() -> Path:
    """Write :func:`log4j2_properties` to a file named by its content in a directory only this
    user can write (under the system's temporary directory) and return its path; an existing
    file with that content is reused, so concurrent jobs share one."""
    text = log4j2_properties()
    directory = Path(tempfile.gettempdir()) / f"recspark-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RuntimeError(f"{directory} is not a private directory of this user: remove it")
    path = directory / f"log4j2-{hashlib.sha256(text.encode()).hexdigest()[:16]}.properties"
    if not path.is_file() or path.read_text() != text:
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as out:
            out.write(text)
        os.replace(out.name, path)
    return path


# ---------------------------------------------------------------------------- a filter for scripts


def filter_stream(source: BinaryIO, sink: BinaryIO) -> None:
    """Copy ``source`` to ``sink`` line by line, redacted, flushing each line (a job's log must
    stay live). Bytes that are not UTF-8 pass through unchanged."""
    for line in iter(source.readline, b""):
        text = line.decode("utf-8", "surrogateescape")
        sink.write(redact(text).encode("utf-8", "surrogateescape"))
        sink.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recspark.core.secrets",
        description="Redact credentials from stdin to stdout (the patterns recspark uses everywhere).",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--log4j2", action="store_true", help="print the redacting log4j2 configuration")
    group.add_argument(
        "--log4j2-file", action="store_true", help="write that configuration to a file; print its path"
    )
    args = parser.parse_args(argv)
    if args.log4j2:
        sys.stdout.write(log4j2_properties())
        return 0
    if args.log4j2_file:
        print(log4j2_config_file())
        return 0
    # The filter ends when its writer does: a Ctrl-C or a TERM sent to the whole process group
    # must not cut off the last lines of the job it filters.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        filter_stream(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # the reader went away
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
