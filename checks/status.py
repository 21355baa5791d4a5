"""A check's status and the error that ends a check early.

A leaf: the readers (SQL and /proc) and the daemon raise and read these without importing
click or nagiosplugin.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


_RANK = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    """The status that wins: CRITICAL > WARNING > UNKNOWN > OK."""
    return max(statuses, key=_RANK.__getitem__, default=Status.OK)


class Cause(enum.Enum):
    """What kind of trouble ended a check, for a caller that must act on it, not just print
    it: the daemon words an outage, a refused login and a missing privilege differently
    (each needs a different fix) and only an outage is the server's state."""

    OTHER = "other"  # settings, an unsupported server, a failed query, a bug
    UNREACHABLE = "unreachable"  # no server answered, or it is starting, stopping, full
    LOGIN_REFUSED = "login refused"  # a server answered and refused this login
    PRIVILEGE = "privilege"  # logged in, but the role may not read what was asked
    TIMEOUT = "timeout"  # a server took longer than the time given to it


class CheckFailed(Exception):
    """Raised by a reader when the question cannot be answered; ends the check with this."""

    def __init__(
        self,
        status: Status,
        message: str,
        details: Sequence[str] = (),
        cause: Cause = Cause.OTHER,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # long-output lines: what the one-line message had to shorten
        self.details = list(details)
        self.cause = cause


def critical(
    message: str, details: Sequence[str] = (), *, cause: Cause = Cause.OTHER
) -> CheckFailed:
    return CheckFailed(Status.CRITICAL, message, details, cause)


def unknown(message: str, *, cause: Cause = Cause.OTHER) -> CheckFailed:
    return CheckFailed(Status.UNKNOWN, message, cause=cause)
