"""What went wrong between the reporter and PostgreSQL, in words an operator acts on.

A login failure is not an outage: the server answered and refused *us*; nor is a missing
privilege. The tag goes either way (fail closed), but the log, the published reason and
consul-role must say which, or an operator chases a healthy server (issue 8: "PostgreSQL
unreachable" for a role name PostgreSQL had refused). The kind comes from the check
error's Cause, set where the error is raised (checks/postgres/connection.py), never from
taking every failure for an outage.

Leaf module: standard library and checks.status only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from checks.status import Cause, CheckFailed

log = logging.getLogger("pg-role-reporter")

UNREACHABLE = "unreachable"
LOGIN_FAILED = "login failed"
NO_PRIVILEGE = "missing privilege"
OTHER = "other"

_KIND_OF_CAUSE = {
    Cause.UNREACHABLE: UNREACHABLE,
    # a server that does not answer in time is, for the tag, one that is not there
    Cause.TIMEOUT: UNREACHABLE,
    Cause.LOGIN_REFUSED: LOGIN_FAILED,
    Cause.PRIVILEGE: NO_PRIVILEGE,
    Cause.OTHER: OTHER,
}


@dataclass(frozen=True)
class PostgresProblem:
    kind: str
    message: str

    @property
    def log_line(self) -> str:
        if self.kind == LOGIN_FAILED:
            return (
                f"PostgreSQL refused the reporter's login ({self.message}); check the role "
                "(e.g. role_reporter), its password (~/.pgpass, PGPASSFILE) and pg_hba.conf"
            )
        if self.kind == NO_PRIVILEGE:
            return f"PostgreSQL: the reporter's role lacks a privilege ({self.message})"
        if self.kind == OTHER:
            return f"PostgreSQL: the reporter cannot read the role ({self.message})"
        return f"PostgreSQL unreachable ({self.message})"

    @property
    def published(self) -> str | None:
        """The reason published in Meta (None for an outage: the checks say that)."""
        if self.kind == UNREACHABLE:
            return None
        return f"pg-role-reporter: {self.log_line}"


def problem_of(failure: CheckFailed) -> PostgresProblem:
    """A failed connect or role query, sorted by its cause."""
    return PostgresProblem(_KIND_OF_CAUSE[failure.cause], failure.message)


class Problems:
    """One ERROR line when a reason to withhold a tag starts or changes, one INFO when it
    ends; the current reason is what the reporter publishes in Meta."""

    def __init__(self) -> None:
        self.current: str | None = None

    def report(self, reason: str | None, *, level: int = logging.ERROR, tag: str) -> None:
        if reason == self.current:
            return
        if reason is not None:
            log.log(level, "NOT tagging %s: %s", tag, reason)
        elif self.current is not None:
            log.info("no longer withholding the %s tag (was: %s)", tag, self.current)
        self.current = reason
