"""checkpoints without a server: the SQL per version, the facts, the judgement and words."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from checks import check_postgresql, runtime
from checks.output import Report
from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.commands import checkpoints as cmd
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.checkpoints import CheckpointsFacts, checkpoints_sql
from checks.status import Status

GIB = 2**30
PRIMARY = CheckpointsFacts(
    in_recovery=False,
    last_checkpoint_age=42.0,
    wal_since_redo_bytes=GIB // 4,
    max_wal_size_bytes=GIB,
    checkpoint_timeout=300.0,
    checkpoints_timed=7,
    checkpoints_requested=2,
)


class _Lent:
    """A connection source (as the resident daemon's) lending a connection that is never
    asked: the reader is replaced by the facts under test."""

    def connection(self, settings: ConnectionSettings) -> AbstractContextManager[Any]:
        return contextlib.nullcontext(SimpleNamespace(info=SimpleNamespace(user="monitor")))


def run(monkeypatch: pytest.MonkeyPatch, facts: CheckpointsFacts | None, *args: str) -> Report:
    monkeypatch.setattr(cmd, "read_checkpoints", lambda conn: facts)
    return runtime.invoke(
        check_postgresql.cli, ["checkpoints", *args], check_postgresql.NAME, source=_Lent()
    )


def test_checkpointer_counters_moved_in_17() -> None:
    before = checkpoints_sql(ServerCapabilities(160004))
    since = checkpoints_sql(ServerCapabilities(170000))
    assert "pg_stat_bgwriter AS s" in before and "s.checkpoints_req::bigint" in before
    assert "pg_stat_checkpointer AS s" in since and "s.num_requested::bigint" in since
    assert "pg_stat_bgwriter" not in since


def test_distance_as_a_share_of_max_wal_size() -> None:
    assert PRIMARY.wal_since_redo_percent == 25.0
    assert replace(PRIMARY, wal_since_redo_bytes=None).wal_since_redo_percent is None
    assert (PRIMARY.kind, replace(PRIMARY, in_recovery=True).kind) == (
        "checkpoint",
        "restartpoint",
    )


def test_on_schedule_is_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    report = run(monkeypatch, PRIMARY)
    assert report.status is Status.OK
    assert report.summary == (
        "256.0 MiB of WAL since the last checkpoint began (25% of max_wal_size 1.0 GiB)"
    )
    assert report.perfdata == [
        f"wal_since_checkpoint={GIB // 4}B;;;0",
        "wal_since_checkpoint_pct=25.0%;150;200;0",
        "last_checkpoint_age=42.0s;;;0",
        "checkpoints_timed=7c;;;0",
        "checkpoints_requested=2c;;;0",
    ]
    assert report.details == [
        "last checkpoint completed 42.0s ago",
        "checkpoint_timeout 5min 0s, max_wal_size 1.0 GiB",
        "since the statistics reset: 7 timed, 2 requested",
    ]


def test_falling_behind_by_default_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    behind = replace(PRIMARY, wal_since_redo_bytes=GIB * 17 // 10)
    report = run(monkeypatch, behind)
    assert report.status is Status.WARNING
    assert report.summary == (
        "1.7 GiB of WAL since the last checkpoint began (170% of max_wal_size 1.0 GiB): "
        "checkpoints fall behind (WAL since the last checkpoint 170.0% (above 150.0%))"
    )
    stuck = replace(PRIMARY, in_recovery=True, wal_since_redo_bytes=GIB * 5 // 2)
    report = run(monkeypatch, stuck)
    assert report.status is Status.CRITICAL
    assert report.summary.startswith(
        "2.5 GiB of WAL since the last restartpoint began (250% of max_wal_size 1.0 GiB): "
        "restartpoints fall behind"
    )


def test_size_thresholds_judge_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    report = run(monkeypatch, PRIMARY, "-w", "100MB", "-c", "1GB")
    assert report.status is Status.WARNING
    assert report.summary.endswith("(WAL since the last checkpoint 256.0 MiB (above 100.0 MiB))")
    # the percentage keeps its defaults
    assert "wal_since_checkpoint_pct=25.0%;150;200;0" in report.perfdata


def test_a_count_is_not_a_threshold_here(monkeypatch: pytest.MonkeyPatch) -> None:
    report = run(monkeypatch, None, "-w", "10")
    assert report.status is Status.UNKNOWN
    assert report.summary == (
        "Invalid value for --warning: '10': this check takes thresholds in percent (90%) "
        "or bytes (16MB) (see --help)"
    )
