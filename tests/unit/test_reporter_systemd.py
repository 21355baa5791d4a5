"""checks/reporter/systemd.py: journald priorities and the sd_notify datagrams.

The notification tests bind a real unix datagram socket, as systemd's is.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks.reporter.systemd import (
    JournalFormatter,
    Notifier,
    journal_priority,
    log_formatter,
    stderr_is_journal,
)


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("pg-role-reporter", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (logging.INFO + 1, 6),
        (logging.NOTSET, 7),
    ],
)
def test_levels_map_to_syslog_priorities(level: int, priority: int) -> None:
    assert journal_priority(level) == priority


def test_every_line_of_a_record_carries_its_priority() -> None:
    formatter = JournalFormatter("%(levelname)s %(message)s")
    text = formatter.format(record(logging.ERROR, "NOT tagging leader\nsecond line"))
    assert text == "<3>ERROR NOT tagging leader\n<3>second line"


def test_stderr_is_the_journal_only_when_its_device_and_inode_match(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream:
        status = os.fstat(stream.fileno())
        same = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        other = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino + 1}"}
        assert stderr_is_journal(stream, same)
        # systemd set it for a stream the process no longer writes to (a redirect)
        assert not stderr_is_journal(stream, other)
        assert not stderr_is_journal(stream, {})
        assert not stderr_is_journal(stream, {"JOURNAL_STREAM": "garbage"})
        journal = log_formatter("%(message)s", stream=stream, environ=same)
        assert isinstance(journal, JournalFormatter)
        plain = log_formatter("%(message)s", stream=stream, environ={})
        assert plain.format(record(logging.WARNING, "w")) == "w"


def test_a_stream_without_a_file_is_not_the_journal() -> None:
    class NoFile:
        def fileno(self) -> int:
            raise ValueError("no fileno")

    assert not stderr_is_journal(NoFile(), {"JOURNAL_STREAM": "1:2"})  # type: ignore[arg-type]


# -- sd_notify ---------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        yield sock, path


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    assert notifier.watchdog_seconds is None
    assert not notifier.ready("x") and not notifier.watchdog() and not notifier.stopping()
    assert notifier.wait_bound(5.0) == 5.0


def test_ready_status_watchdog_and_stopping_arrive_as_datagrams(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    try:
        assert notifier.ready("service pg-db:\nprimary")
        assert received(sock) == ["READY=1", "STATUS=service pg-db: primary"]
        assert notifier.watchdog(now=100.0)
        assert received(sock) == ["WATCHDOG=1"]
        assert notifier.stopping()
        assert received(sock) == ["STOPPING=1"]
    finally:
        notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"pg-ha-checks-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        try:
            assert notifier.ready("up")
            assert received(sock)[0] == "READY=1"
        finally:
            notifier.close()


def test_watchdog_pings_at_most_every_quarter_and_the_loop_wakes_every_half(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _, path = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert notifier.watchdog_seconds == 4.0 and notifier.ping_every == 2.0
    assert notifier.wait_bound(10.0) == 2.0
    assert notifier.wait_bound(0.5) == 0.5
    assert notifier.watchdog(now=10.0)
    assert not notifier.watchdog(now=10.5)
    assert notifier.watchdog(now=11.0)
    notifier.close()


def test_watchdog_meant_for_another_process_is_ignored(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "1000000"}
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_seconds == 1.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_seconds is None
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "0"}).watchdog_seconds is None


def test_a_vanished_socket_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    logger = logging.getLogger("pg-role-reporter")
    logger.propagate, saved = True, logger.propagate
    try:
        with caplog.at_level(logging.DEBUG, logger="pg-role-reporter"):
            assert not notifier.ready("x")
            assert not notifier.ready("x")
    finally:
        logger.propagate = saved
        notifier.close()
    failures = [r for r in caplog.records if "notification" in r.getMessage()]
    assert len(failures) == 1
    # systemd will time the start out or kill us for a missed ping: the reason (a drop-in
    # that took AF_UNIX away, say) must be in the log an operator reads, not at debug
    assert failures[0].levelno == logging.WARNING


def test_the_reporter_logs_with_priorities_under_journald(tmp_path: Path) -> None:
    """The real CLI's logging setup, with stderr a file systemd would have named."""
    import subprocess

    stream = tmp_path / "stderr"
    code = (
        "import os, sys, logging\n"
        "st = os.fstat(2)\n"
        "os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
        "from checks.reporter.cli import _configure_logging, log\n"
        "_configure_logging(0)\n"
        "log.warning('agent unreachable'); log.error('NOT tagging leader'); log.info('ok')\n"
    )
    with stream.open("w") as err:
        subprocess.run([sys.executable, "-c", code], stderr=err, check=True, timeout=60)
    assert stream.read_text().splitlines() == [
        "<4>WARNING agent unreachable",
        "<3>ERROR NOT tagging leader",
        "<6>INFO ok",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["--interval", "0"],  # usage error
        ["--token-file", "/nonexistent/pg-ha-checks-token"],  # setup error
    ],
)
def test_the_line_a_reporter_dies_with_is_an_error_under_journald(
    tmp_path: Path, args: list[str]
) -> None:
    """Exit 2 is final under the unit (RestartPreventExitStatus=2): the one line that says
    why must reach `journalctl -p err`, not be stored as info like an unprefixed line."""
    import subprocess

    stream = tmp_path / "stderr"
    code = (
        "import os, sys\n"
        "st = os.fstat(2)\n"
        "os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
        "from checks.reporter.cli import main\n"
        f"main({args!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CONSUL_"))}
    with stream.open("w") as err:
        done = subprocess.run([sys.executable, "-c", code], stderr=err, env=env, timeout=60)
    assert done.returncode == 2
    lines = stream.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("<3>pg-role-reporter: "), lines
