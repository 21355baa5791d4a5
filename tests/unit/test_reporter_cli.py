"""pg-role-reporter's CLI: clean one-line errors and exit codes, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPORTER = [sys.executable, "-m", "checks.reporter"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CONSUL_"))}
    return subprocess.run(
        [*REPORTER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_lists_the_options_and_exits_0() -> None:
    result = run("--help")
    assert result.returncode == 0
    for option in ("--service-id", "--once", "--dry-run", "--interval", "--token-file"):
        assert option in result.stdout


def test_usage_error_is_one_line_exit_2() -> None:
    result = run("--interval", "nope")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("pg-role-reporter: ")


def test_unreadable_token_file_is_a_setup_error() -> None:
    result = run("--once", "--token-file", "/nonexistent/token")
    assert result.returncode == 2
    assert "cannot read the Consul token file /nonexistent/token" in result.stderr
    assert "Traceback" not in result.stderr


def test_once_against_an_absent_agent_fails_cleanly_and_never_logs_the_token() -> None:
    secret = "0badc0de-1111-2222-3333-444455556666"
    result = run(
        "--once",
        "--consul-addr",
        f"127.0.0.1:{closed_port()}",
        "-H",
        "127.0.0.1",
        "-p",
        str(closed_port()),
        "-t",
        "2",
        env={"CONSUL_HTTP_TOKEN": secret},
    )
    assert result.returncode == 1, result.stderr
    assert "PostgreSQL unreachable" in result.stderr
    assert "Consul: cannot reach the Consul agent" in result.stderr
    assert "(token from CONSUL_HTTP_TOKEN)" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_empty_and_world_readable_token_files_are_refused_each_in_its_own_words(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    empty.chmod(0o600)
    result = run("--once", "--token-file", str(empty))
    assert result.returncode == 2
    assert result.stderr == f"pg-role-reporter: the Consul token file {empty} is empty\n"
    result = run("--once", env={"CONSUL_HTTP_TOKEN_FILE": str(empty)})
    assert result.returncode == 2
    assert result.stderr == f"pg-role-reporter: the Consul token file {empty} is empty\n"

    secret = "0badc0de-1111-2222-3333-444455556666"
    shared = tmp_path / "shared-token"
    shared.write_text(secret)
    shared.chmod(0o644)
    result = run("--once", env={"CONSUL_HTTP_TOKEN_FILE": str(shared)})
    assert result.returncode == 2
    assert result.stderr == (
        f"pg-role-reporter: the Consul token file {shared} is readable by every user "
        "(mode 644); chmod 600 it, owned by the reporter's user\n"
    )
    assert secret not in result.stderr


@pytest.mark.parametrize("interval", ["nan", "inf", "1e300"])
def test_an_interval_that_is_no_number_of_seconds_is_a_usage_error(interval: str) -> None:
    # nan made the loop poll PostgreSQL without pause; inf and 1e300 crashed it
    result = run("--interval", interval)
    assert result.returncode == 2
    assert result.stderr.startswith("pg-role-reporter: Invalid value for '--interval'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("option", ["--lock-delay", "--session-ttl", "--wal-lsn-interval"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_every_duration_option_refuses_what_is_no_number_of_seconds(
    option: str, value: str
) -> None:
    # FloatRange lets nan through; it would reach Consul's session or the publish timer
    result = run(option, value)
    assert result.returncode == 2
    assert result.stderr.startswith(f"pg-role-reporter: Invalid value for '{option}'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_t_is_named_for_what_it_bounds_and_timeout_still_works() -> None:
    """A check's -t bounds its run; the daemon's bounds one round trip to PostgreSQL."""
    assert "-t, --round-trip-timeout, --timeout SECONDS" in run("--help").stdout
    for option in ("-t", "--round-trip-timeout", "--timeout"):
        result = run(option, "nan")
        assert result.returncode == 2, option
        assert result.stderr.startswith("pg-role-reporter: Invalid value for '")
        assert "Traceback" not in result.stderr
