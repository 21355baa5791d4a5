"""What pg-role-reporter tells systemd: log priorities, readiness and watchdog pings.

Facts this module relies on (systemd.exec(5), sd-daemon(3), sd_notify(3)):

- A service's stderr connected to the journal is read line by line, and a line that
  starts with `<N>` (N = syslog priority 0-7) is stored with that priority, the prefix
  removed; without it every line is *info*. systemd sets `JOURNAL_STREAM=<dev>:<inode>`
  for such a service; stderr is still that stream only if fstat(2) gives the same pair
  (a redirect in ExecStart, or a terminal, makes the prefix noise), so the prefix is
  written only then.
- `Type=notify`: the service is "started" when it sends `READY=1` to the datagram socket
  named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). With
  `WatchdogSec=` systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`, the process meant) and
  restarts the service (`Restart=` permitting) when no `WATCHDOG=1` arrived within it;
  sd_watchdog_enabled(3) advises pinging every half of it. `STOPPING=1` says a stop has
  begun; `STATUS=` is one line `systemctl status` shows.

Why the standard library and not a package: the protocol is one datagram of
newline-separated `KEY=value` fields, declared stable by systemd, a dozen lines here.
`systemd-python` (the systemd project's binding) ships no wheels on PyPI, only C sources
that need libsystemd headers and a compiler on every host; `sdnotify` (pure Python) has
had no release since 2017. Neither would replace more than `send()` below.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import TextIO

log = logging.getLogger("pg-role-reporter")

# syslog priorities (sd-daemon(3)'s SD_ERR etc.) for the logging levels.
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
DEBUG_PRIORITY = 7


def journal_priority(levelno: int) -> int:
    """The syslog priority of a logging level (between levels: the lower one's)."""
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return DEBUG_PRIORITY


def stderr_is_journal(
    stream: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """True when `stream` (stderr) is the journal stream systemd named in JOURNAL_STREAM."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a real file
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class JournalFormatter(logging.Formatter):
    """Prefixes every line with the record's `<N>` priority, so a traceback's lines too
    keep the record's priority rather than falling back to info."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def journal_line(
    levelno: int,
    text: str,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """`text` for a direct write to stderr (outside logging): with the level's priority
    prefix under journald, as it is; so the line the daemon exits with is not info."""
    if stderr_is_journal(stream, environ):
        return f"<{journal_priority(levelno)}>{text}"
    return text


def log_formatter(
    fmt: str, *, stream: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> logging.Formatter:
    """A formatter for the daemon's stderr: with priorities under journald, plain otherwise."""
    if stderr_is_journal(stream, environ):
        return JournalFormatter(fmt)
    return logging.Formatter(fmt)


class Notifier:
    """sd_notify(3) for one process: READY, WATCHDOG, STOPPING and STATUS datagrams.

    Without `$NOTIFY_SOCKET` (not under systemd, or Type=simple) every call does nothing,
    so the loop calls it unconditionally. A failed send is logged once (a warning: systemd
    will time the start out or kill us for a missed ping, and the reason, say a drop-in
    that took AF_UNIX away, is only here) and never stops the loop.
    """

    def __init__(self, address: str | None, watchdog_seconds: float | None = None) -> None:
        self.address = _socket_address(address) if address else None
        self.watchdog_seconds = watchdog_seconds if self.address else None
        self._socket: socket.socket | None = None
        self._last_ping = float("-inf")
        self._send_failed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, _watchdog_seconds(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def ping_every(self) -> float | None:
        """Seconds between two watchdog pings (half the timeout), None without a watchdog."""
        return self.watchdog_seconds / 2 if self.watchdog_seconds else None

    def wait_bound(self, interval: float) -> float:
        """How long the loop may sleep: `interval`, shortened so no ping comes late."""
        every = self.ping_every
        return min(interval, every) if every else interval

    def send(self, *fields: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._send_failed:
                log.warning(
                    "systemd notification to %r failed: %s (systemd will count the "
                    "reporter as not started or hung)",
                    self.address,
                    exc,
                )
                self._send_failed = True
            return False
        self._send_failed = False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={_one_line(status)}")

    def watchdog(self, *, now: float | None = None) -> bool:
        """Ping, at most once per quarter of the timeout (the loop may turn faster)."""
        if not self.watchdog_seconds:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_seconds / 4:
            return False
        if self.send("WATCHDOG=1"):
            self._last_ping = now
            return True
        return False

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str) -> str:
    # "@name" is Linux's abstract namespace: a leading NUL byte, nothing on disk.
    return "\0" + value[1:] if value.startswith("@") else value


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """WATCHDOG_USEC in seconds, if it is meant for this process (sd_watchdog_enabled(3))."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(text.split())
