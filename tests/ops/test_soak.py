"""Three simulated shop days of ``bench/soak.py``: both streams running throughout, nightly
trains, maintenance, erasures, a catalog change, a registry outage and a SIGKILL of each stream,
and every invariant holds on every day."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT_SECONDS = 1200  # the soak's own processes (streams, nightly jobs, checker) included


@pytest.mark.soak
@pytest.mark.slow
@pytest.mark.spark  # JVMs of its own: the streams, the nightly jobs and the soak's checker
def test_three_soak_days_hold_every_invariant(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "soak.py"),
        "--days",
        "3",
        "--root",
        str(tmp_path / "soak"),
        "--json",
        str(summary),
    ]
    soak = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = soak.communicate(timeout=LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        soak.send_signal(signal.SIGTERM)  # the soak stops its streams and jobs, then exits
        output, _ = soak.communicate(timeout=120)
    assert summary.exists(), output[-6000:]
    report = json.loads(summary.read_text())
    failed = {
        day["day"]: {name: check["detail"] for name, check in day["checks"].items() if not check["ok"]}
        for day in report["days"]
        if not day["held"]
    }
    assert not failed, f"{failed}\n{output[-6000:]}"
    assert report["days_held"] == 3 and soak.returncode == 0, output[-6000:]
    # The schedule happened: a user forgotten by day and one during the nightly train, and
    # every disturbance.
    assert report["forgotten"] == 2
    notes = "; ".join(note for day in report["days"] for note in day["notes"])
    for disturbance in ("during train", "catalog:", "registry away", "SIGKILL ingest", "SIGKILL refresh"):
        assert disturbance in notes, notes
    assert "maintain" in notes and "maintain FAILED" not in notes, notes
    assert report["batches"]["ingest"] >= 3 and report["batches"]["refresh"] >= 3
