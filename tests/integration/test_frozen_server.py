"""A check never hangs: frozen postmaster, a listener that never answers (docs/design.md §2)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import psutil
import pytest

from harness.postgres import PgCluster
from tests.plugin_run import check_postgresql

TIMEOUT = 3


def _descendants_that_are_not_postgres() -> set[int]:
    # The harness's postmasters are this process's children, so their backends and
    # autovacuum workers come and go below it too; only other processes count.
    pids = set()
    for process in psutil.Process().children(recursive=True):
        try:
            if not process.name().startswith("postgres"):
                pids.add(process.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def assert_ended_in_time(run, started_children: set[int]) -> None:
    assert run.elapsed < TIMEOUT + 1, f"took {run.elapsed:.2f}s with -t {TIMEOUT}"
    assert run.status in ("CRITICAL", "UNKNOWN")
    assert not _descendants_that_are_not_postgres() - started_children


def test_sigstopped_postmaster(make_pg_cluster) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=0)
    server = cluster.primary
    before = _descendants_that_are_not_postgres()
    server.freeze()
    try:
        run = check_postgresql("alive", "-t", str(TIMEOUT), env=server.env())
    finally:
        server.thaw()
    assert_ended_in_time(run, before)
    assert run.summary.startswith(
        (f"cannot connect to 127.0.0.1:{server.port}", "timeout: no answer from 127.0.0.1")
    )


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """Accepts TCP connections (the kernel does) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["alive", "role", "lag", "standbys"])
def test_listener_that_never_answers(silent_listener: int, command: str) -> None:
    before = _descendants_that_are_not_postgres()
    run = check_postgresql(
        command,
        "-H",
        "127.0.0.1",
        "-p",
        str(silent_listener),
        "-U",
        "monitor",
        "-t",
        str(TIMEOUT),
    )
    assert_ended_in_time(run, before)
    assert f"127.0.0.1:{silent_listener}" in run.summary


def test_timeout_shorter_than_libpq_minimum_still_holds(silent_listener: int) -> None:
    # libpq's connect_timeout cannot go below 2 s; the watchdog must end the run anyway
    run = check_postgresql("alive", "-H", "127.0.0.1", "-p", str(silent_listener), "-t", "1")
    assert run.elapsed < 2
    assert run.first_line.startswith(
        f"PG_ALIVE CRITICAL - timeout: no answer from 127.0.0.1:{silent_listener} within 1s"
    )
