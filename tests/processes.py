"""Processes the tests start and must not leave behind."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_seconds``; reaped either way."""
    process.terminate()
    try:
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
