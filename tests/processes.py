"""Processes the tests start and must not leave behind."""

from __future__ import annotations

import socket
import subprocess
import sys


def stop(process: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_seconds``; reaped either way."""
    process.terminate()
    try:
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test is about to start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def api_command(settings: list[str]) -> list[str]:
    """``recspark api`` with ``--set`` for each of ``settings``, in this interpreter."""
    return [sys.executable, "-m", "recspark.cli", "api", *(a for s in settings for a in ("--set", s))]
