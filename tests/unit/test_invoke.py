"""invoke(): a check run in-process answers exactly what the executable prints."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from checks import check_postgresql, mem_check, runtime
from checks.postgres.connection import ConnectionSettings, connection_source
from checks.status import Status, critical
from tests.plugin_run import executable, run_plugin
from tests.unit.mem_helpers import tree


@pytest.mark.parametrize(
    "args",
    [
        ["lag", "--bogus"],
        ["slotz"],
        ["alive", "-t", "0"],
        ["role", "--expect", "leader"],
        ["lag", "-w", "10"],
    ],
)
def test_check_postgresql_usage_errors_match_the_executable(args: list[str]) -> None:
    run = run_plugin([*executable("check_postgresql", "checks.check_postgresql"), *args])
    report = runtime.invoke(check_postgresql.cli, args, check_postgresql.NAME)
    assert (report.render(), int(report.status)) == (run.stdout, run.code)
    assert report.status is Status.UNKNOWN


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["--scope", "nowhere"],
        ["--cgroup", "/system.slice", "--scope", "host"],
        ["--root", tree("v2-host"), "--scope", "host"],
        ["--root", tree("hugepages"), "-w", "1%", "-v"],
    ],
)
def test_mem_check_matches_the_executable(args: list[str]) -> None:
    run = run_plugin([*executable("mem_check", "checks.mem_check"), *args])
    report = runtime.invoke(mem_check.command, args, mem_check.NAME)
    assert (report.render(), int(report.status)) == (run.stdout, run.code)


@pytest.mark.parametrize("args", [["--help"], ["lag", "-h"], ["-V"]])
def test_help_and_version_are_reports_never_printed(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    report = runtime.invoke(check_postgresql.cli, args, check_postgresql.NAME)
    assert capsys.readouterr() == ("", "")
    assert report.status is Status.UNKNOWN
    if args == ["-V"]:
        assert report.summary.startswith("--version is not a check: pg-ha-checks ")
    else:
        assert report.summary == "--help is not a check: the command's help follows"
        assert report.details[0].startswith("Usage: check_postgresql")


class RefusingSource:
    """A connection source that records the threads alive when asked, then refuses."""

    def __init__(self) -> None:
        self.asked: list[ConnectionSettings] = []
        self.threads: list[str] = []

    @contextlib.contextmanager
    def connection(self, settings: ConnectionSettings) -> Iterator[Any]:
        self.asked.append(settings)
        self.threads = [thread.name for thread in threading.enumerate()]
        raise critical("the lent connection is down")
        yield  # pragma: no cover


def test_a_check_asks_the_source_and_starts_no_watchdog() -> None:
    source = RefusingSource()
    report = runtime.invoke(
        check_postgresql.cli, ["alive", "-t", "1"], check_postgresql.NAME, source=source
    )
    assert (report.status, report.summary) == (Status.CRITICAL, "the lent connection is down")
    assert len(source.asked) == 1
    assert not [name for name in source.threads if name.endswith("watchdog")]
    # the source is lent for that run only
    assert connection_source.get() is None


def test_internal_errors_are_unknown_reports() -> None:
    class Broken:
        def connection(self, settings: ConnectionSettings) -> Any:
            raise ZeroDivisionError("boom")

    report = runtime.invoke(check_postgresql.cli, ["role"], check_postgresql.NAME, source=Broken())
    assert report.status is Status.UNKNOWN
    assert report.summary == "internal error: ZeroDivisionError: boom"
