"""What a job prints, and where the rest goes.

The terminal shows what a person needs: recspark's own lines (a line per stage, progress on long
work, warnings that matter, the report) and any library's errors. Everything else (library INFO
lines and warnings, Python warnings, and, when recspark starts the JVM itself, the JVM's own
output: Ivy's resolution, Spark's WARNs) goes to a log file under the lake, ``<lake>/_logs/<job>.log``.
``verbose`` (the ``-v`` of every command) keeps it all on the terminal, as does a lake that is not
a local folder (there is no local file to hold the rest). Both outputs are redacted.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from urllib.parse import urlparse

from recspark.core.secrets import redact, redact_standard_streams

LOG_FOLDER = "_logs"
# Loggers whose INFO lines are meant for the person at the terminal.
OWN_LOGGERS = ("recspark", "__main__")

# ``log.info(..., extra=DETAIL)``: a line for the log file (a trial, a path written again, a
# record kept), not for the person at the terminal; its warnings and errors still show.
DETAIL = {"detail": True}

_planned: Path | None = None  # where keep_terminal_for_people will send the chatter
_diverted: Path | None = None  # where it goes now


class RedactingFormatter(logging.Formatter):
    """Formats as :class:`logging.Formatter` does, then redacts (traceback included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class ForAPerson(logging.Filter):
    """recspark's own records but its :data:`DETAIL` lines below WARNING, and any logger's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        own = any(record.name == name or record.name.startswith(name + ".") for name in OWN_LOGGERS)
        detail = getattr(record, "detail", False) and record.levelno < logging.WARNING
        return own and not detail


class Progress:
    """Periodic counts on long work whose steps are :data:`DETAIL` lines: :meth:`tick` after
    each step logs its message at most once per ``every_seconds`` (the first after that long),
    so a person sees the work move without a line per step."""

    def __init__(self, logger: logging.Logger, every_seconds: float = 30.0) -> None:
        self.logger = logger
        self.every_seconds = every_seconds
        self.last = time.monotonic()

    def tick(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_seconds:
            self.logger.info("%s", message)
            self.last = now


class _LinesToLog(io.TextIOBase):
    """A text stream whose every complete, non-blank line becomes a :data:`DETAIL` record."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.strip():
                self.logger.info("%s", line, extra=DETAIL)
        return len(text)

    def close(self) -> None:
        self.write("\n")
        super().close()


@contextmanager
def printed_to_log(logger: logging.Logger) -> Iterator[None]:
    """What a library prints inside (MLflow prints its registrations) goes to ``logger`` as
    :data:`DETAIL` lines: the log file keeps it, the terminal does not (``-v`` shows it)."""
    stream = _LinesToLog(logger)
    try:
        with redirect_stdout(stream), redirect_stderr(stream):
            yield
    finally:
        stream.close()


def line_format(job: str) -> str:
    return f"%(asctime)s %(levelname)s {job} %(name)s: %(message)s"


def setup_logging(job: str) -> None:
    """INFO to stderr, every logger (until :func:`keep_terminal_for_people`). Everything the
    process prints is redacted (log lines, MLflow's, the traceback of an exception nobody
    catches), since messages may quote URIs with credentials; the JVM's own lines are redacted by
    the log4j2 configuration the session builder gives it."""
    global _planned, _diverted
    _planned = _diverted = None
    redact_standard_streams()
    logging.basicConfig(level=logging.INFO, format=line_format(job), force=True)
    for noisy in ("py4j", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_file_for(lake_root: str, job: str) -> Path | None:
    """``<lake>/_logs/<job>.log`` for a lake in a local folder; None for any other store."""
    parsed = urlparse(lake_root)
    if parsed.scheme == "file":
        return Path(parsed.path) / LOG_FOLDER / f"{job}.log"
    if parsed.scheme and len(parsed.scheme) > 1:  # s3a://, abfss://... (not a drive letter)
        return None
    return Path(lake_root) / LOG_FOLDER / f"{job}.log"


def keep_terminal_for_people(job: str, lake_root: str) -> Path | None:
    """After :func:`setup_logging`: from the moment this process builds its Spark session
    (:func:`divert_library_output`), library chatter goes to the job's log file under the lake
    and the terminal keeps :class:`ForAPerson`'s records. Returns that file (None: the lake is
    not local, nothing will change). Nothing is created before the session: a job without Spark
    prints as it did, and no lake folder exists before the demo decides what it may reset."""
    global _planned
    _planned = log_file_for(lake_root, job)
    return _planned


def divert_library_output() -> Path | None:
    """Called by :func:`recspark.core.session.build_spark` before it starts a JVM: route the
    chatter as :func:`keep_terminal_for_people` planned (once) and return the file the JVM's
    output should go to (None: leave the JVM the process's own streams)."""
    global _diverted
    if _planned is None or _diverted == _planned:
        return _diverted
    path = _planned
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(ForAPerson())
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(RedactingFormatter(line_format(path.stem)))
    root.addHandler(to_file)
    # MLflow logs through a handler of its own straight to stderr: route it like the others.
    mlflow = logging.getLogger("mlflow")
    for handler in mlflow.handlers[:]:
        mlflow.removeHandler(handler)
    mlflow.propagate = True
    logging.captureWarnings(False)  # start afresh: the flag outlives a restored showwarning
    logging.captureWarnings(True)
    _diverted = path
    logging.getLogger("recspark").info("library and Spark logs: %s (-v shows them here)", path)
    return path
