"""The job registry: one name per job everywhere, readable without pyspark, and the entry points
(the CLI, jobs/run.py, deploy/submit.sh) built from it. Spark-free: the registry's runs are
tested where they run (tests/ops/test_runs.py, tests/entrypoints/test_demo.py and
tests/entrypoints/test_deploy.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recspark import demo
from recspark.cli import COMMANDS, build_parser
from recspark.jobs import JOBS, UnknownJobError, submitted
from recspark.ops.quality.suites import CHECKED_TABLES

ROOT = Path(__file__).resolve().parents[2]

# Without site-packages (-S) nothing but the standard library can be imported.
STDLIB_ONLY = """
import json, runpy, sys
module = runpy.run_path(sys.argv[1], run_name="recspark_jobs")
jobs = {
    name: {"submit": job.submit, "scheduled_args": list(job.scheduled_args)}
    for name, job in module["JOBS"].items()
}
modules = sorted(m for m in sys.modules if m.split(".")[0] in ("recspark", "pyspark", "yaml"))
print(json.dumps({"jobs": jobs, "modules": modules}))
"""


def test_the_registry_reads_with_the_standard_library_alone() -> None:
    """What the Airflow scheduler does: run recspark/jobs.py on its own, no site-packages."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", STDLIB_ONLY, str(ROOT / "recspark" / "jobs.py")],
        cwd=ROOT.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["modules"] == []
    assert set(report["jobs"]) == set(JOBS)
    assert report["jobs"]["ingest"] == {"submit": True, "scheduled_args": ["--once"]}

    names = subprocess.run(
        [sys.executable, "-S", "-m", "recspark.jobs", "--names"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert names == [name for name, job in JOBS.items() if job.submit]


def test_one_spelling_per_job() -> None:
    assert all(name == job.name for name, job in JOBS.items())
    spellings = [s for job in JOBS.values() for s in (job.name, *job.aliases)]
    assert len(spellings) == len(set(spellings))
    assert {"ingest", "train", "refresh", "recommend", "maintain", "check"} <= set(JOBS)
    # Operators' crontabs and scripts named these; they still reach the same jobs.
    assert {
        old: submitted(old).name for old in ("ingest_events", "train_als", "refresh_recommendations")
    } == {
        "ingest_events": "ingest",
        "train_als": "train",
        "refresh_recommendations": "refresh",
    }
    for name in ("nope", "generate", "demo"):  # unknown, or not a Spark application
        with pytest.raises(UnknownJobError, match="spark-submit runs one of: ingest, train"):
            submitted(name)


def test_the_cli_has_a_subcommand_per_job_with_its_arguments() -> None:
    assert set(COMMANDS) == {*JOBS, "demo"}
    parser = build_parser()
    assert parser.parse_args(["ingest", "--once"]).once is True
    assert parser.parse_args(["refresh"]).once is False
    assert parser.parse_args(["forget-user", "u7"]).user_id == "u7"
    assert parser.parse_args(["show", "u7", "--json"]).json is True
    assert parser.parse_args(["generate", "--users", "12"]).users == 12
    assert parser.parse_args(["promote", "3"]).version == "3"
    for name, job in COMMANDS.items():
        args = parser.parse_args(
            [name, *(["x"] if any(not a.name.startswith("-") for a in job.arguments) else [])]
        )
        assert set(vars(job.options())) <= set(vars(args)), name


def test_the_demos_stages_are_registry_jobs_with_cli_arguments() -> None:
    """The demo runs registry jobs through run_job, with arguments the CLI would parse."""
    parser = build_parser()
    assert [name for name, _ in demo.STAGES] == ["ingest", "train", "recommend"]
    for name, options in demo.STAGES:
        cli = ["--once"] if options.get("once") else []
        assert vars(JOBS[name].options(**options)).items() <= vars(parser.parse_args([name, *cli])).items()


def test_job_options_are_the_cli_defaults() -> None:
    assert vars(JOBS["ingest"].options()) == {"once": False}
    assert vars(JOBS["ingest"].options(once=True)) == {"once": True}
    with pytest.raises(TypeError, match="job train has no argument once"):
        JOBS["train"].options(once=True)


def test_gates_name_checked_tables_and_only_tracked_jobs_have_them() -> None:
    checked = {spec.name for spec in CHECKED_TABLES}
    for job in JOBS.values():
        assert set(job.gates) <= checked, job.name
        assert job.tracked or not job.gates, job.name
    assert JOBS["ingest"].gates == ("events", "interactions")
    assert JOBS["refresh"].gates == ("recommendations",)
    tracked = {name for name, job in JOBS.items() if job.tracked}
    assert tracked == {
        "ingest",
        "train",
        "tune",
        "recommend",
        "refresh",
        "rebuild-interactions",
        "maintain",
        "check",
        "forget-user",
        "promote",
        "rollback",
    }


def test_jobs_holds_one_generic_entry_point() -> None:
    """spark-submit runs ``jobs/run.py JOB``: no per-job file can drift from the registry."""
    assert sorted(p.name for p in (ROOT / "jobs").glob("*.py")) == ["run.py"]
    for args, message in (([], "usage: jobs/run.py JOB"), (["demo"], "unknown job 'demo'")):
        done = subprocess.run(
            [sys.executable, str(ROOT / "jobs" / "run.py"), *args],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert message in done.stderr
