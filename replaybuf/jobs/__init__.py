"""Batch hygiene jobs, drift checks and reports (issue 7).

A job is a pure function of a consistent snapshot of a table at one LSN and its job file
(`plan_job`); `run_job` applies it in-process (`EngineTarget`, which scans and plans in a
child process by default: `replaybuf.jobs.scan_process`) or through a server (`ClientTarget`).
See README.md, "Hygiene jobs and drift".
"""

from __future__ import annotations

from replaybuf.jobs.drift import DriftResult, check_drift, ks_statistic, psi
from replaybuf.jobs.jobfile import DriftSpec, JobSpec, load_job, parse_job
from replaybuf.jobs.policies import POLICIES, EvictionPolicy
from replaybuf.jobs.plan import Plan, plan_job
from replaybuf.jobs.runner import SCAN_MODES, ClientTarget, EngineTarget, RunResult, run_job
from replaybuf.jobs.scan_process import ScanProcessError
from replaybuf.jobs.snapshot import Snapshot, from_events, from_view

__all__ = [
    "ClientTarget", "DriftResult", "DriftSpec", "EngineTarget", "EvictionPolicy", "JobSpec",
    "POLICIES", "Plan", "RunResult", "SCAN_MODES", "ScanProcessError", "Snapshot", "check_drift",
    "from_events", "from_view", "ks_statistic", "load_job", "parse_job", "plan_job", "psi",
    "run_job",
]
