"""The plugin contract at the edges: usage errors, help, version, import cost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.plugin_run import check_postgresql


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "No such option"),
        (["slotz"], "No such command 'slotz'"),
        (["slotz", "--help"], "No such command 'slotz'"),
        (["lag", "--bogus"], "No such option"),
        (["lag", "-w", "10"], "this check takes thresholds in bytes (16MB) or seconds (30s)"),
        (["lag", "-w", "16 parsecs"], "unknown unit"),
        (["alive", "-w", "20:10"], "start 20 must not be greater than end 10"),
        (["role", "--expect", "leader"], "'leader' is not one of"),
        (["alive", "-t", "0"], "Invalid value for '-t' / '--timeout'"),
        (["alive", "-t", "3000000"], "3000000 is more than a day (86400 seconds)"),
        (["alive", "-t", "1e20"], "1e20 is more than a day (86400 seconds)"),
        (["alive", "-t", "inf"], "inf is more than a day (86400 seconds)"),
        (["alive", "-t", "nan"], "'nan' is not a number of seconds"),
        (["alive", "-t", "-3"], "-3: a timeout is a positive number of seconds"),
        (["alive", "-t", "16MB"], "'16MB' is not a number of seconds"),
        (
            ["alive", "-t", "0.1"],
            "0.1 seconds is too short, give at least 1: a busy server takes longer to "
            "connect, and libpq gives up a connect only after 2s",
        ),
        (["alive", "-p", "notaport"], "Invalid value for '-p' / '--port'"),
    ],
)
def test_usage_errors_are_unknown_on_stdout(args: list[str], message: str) -> None:
    run = check_postgresql(*args)
    assert run.code == 3
    assert run.first_line.startswith("CHECK_POSTGRESQL UNKNOWN - ")
    assert message in run.first_line
    assert run.stderr == ""


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["lag", "--help"], ["-V"]])
def test_help_and_version_exit_zero(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "checks.check_postgresql", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert ("Usage: " in proc.stdout) or ("pg-ha-checks" in proc.stdout)


@pytest.mark.parametrize("args", [["--help"], ["lag", "--help"], ["lag", "--bogus"]])
def test_help_and_usage_errors_do_not_import_psycopg(args: list[str]) -> None:
    # psycopg's import is the biggest fixed cost of a run (~0.3 s): pay it only to connect
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "checks.check_postgresql", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert not {name for name in imported if name.split(".")[0] == "psycopg"}


@pytest.mark.parametrize("value", ["3000000", "1e20", "inf", "nan", "0.1"])
def test_timeouts_never_reach_the_server(value: str) -> None:
    """Refused before anything is imported or connected: no internal error, no CRITICAL,
    nothing on stderr (a Timer thread once died there on inf and nan)."""
    run = check_postgresql("alive", "-t", value, env={"PGHOST": "192.0.2.1"})
    assert run.code == 3 and run.stderr == "" and "internal error" not in run.stdout


def test_timeout_takes_a_duration() -> None:
    from checks.runtime import TimeoutType

    assert TimeoutType().convert("2min", None, None) == 120.0
    assert TimeoutType().convert("2.5", None, None) == 2.5


@pytest.mark.parametrize(
    ("conninfo", "message"),
    [
        # libpq quotes the token it cannot decode: here the password itself
        ("postgresql://mon:S3cretPW%ZZ@127.0.0.1:1/postgres", "invalid percent-encoded token"),
        # ... or the whole URI
        ("postgresql://mon:S3cretPW@[::1/postgres", "IPv6 host address in URI"),
        # ... or the word after an unquoted space: the password's second half
        ("host=127.0.0.1 port=1 password=pass S3cretPW", 'missing "=" after'),
    ],
)
def test_a_conninfo_libpq_rejects_is_not_echoed(conninfo: str, message: str) -> None:
    # libpq objects before connecting, so no server is needed
    run = check_postgresql("alive", "-d", conninfo)
    assert run.status == "UNKNOWN"
    assert run.summary.startswith("bad connection settings: ")
    assert message in run.summary
    assert "S3cretPW" not in run.stdout
