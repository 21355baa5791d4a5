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


class CheckFailed(Exception):
    """Raised by a reader when the question cannot be answered; ends the check with this."""

    def __init__(self, status: Status, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # long-output lines: what the one-line message had to shorten
        self.details = list(details)


def critical(message: str, details: Sequence[str] = ()) -> CheckFailed:
    return CheckFailed(Status.CRITICAL, message, details)


def unknown(message: str) -> CheckFailed:
    return CheckFailed(Status.UNKNOWN, message)
