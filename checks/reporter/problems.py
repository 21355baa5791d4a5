"""What went wrong between the reporter and PostgreSQL, in words an operator acts on
(pure logic).

A login failure is not an outage: the server answered and refused *us*. The tag goes
either way (fail closed), but the log, the published reason and consul-role must say which,
or an operator chases a healthy server (issue 8: "PostgreSQL unreachable" for a role name
PostgreSQL had refused). libpq reports a refused login as a FATAL server message during
the connect; the classification reads the message because libpq gives no SQLSTATE for
errors raised during the startup packet exchange.

Leaf module: standard library only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("pg-role-reporter")

UNREACHABLE = "unreachable"
LOGIN_FAILED = "login failed"
NO_PRIVILEGE = "missing privilege"
SETTINGS = "bad settings"

# Server messages during the startup exchange that mean "the server is there but refuses
# this login" (PostgreSQL's auth.c and postinit.c wording, English lc_messages).
_LOGIN_REFUSALS = (
    "password authentication failed",
    "authentication failed for user",
    'role "',  # role "x" does not exist / is not permitted to log in
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "no password supplied",
    'database "',  # database "x" does not exist
    "permission denied for database",
    "is not permitted to log in",
)
# FATALs that describe the server's state, not our login: an outage or a restart.
_SERVER_STATES = (
    "the database system is",  # starting up / shutting down / in recovery mode
    "too many clients",
    "remaining connection slots",
)


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
        if self.kind == SETTINGS:
            return f"PostgreSQL connection settings are unusable ({self.message})"
        return f"PostgreSQL unreachable ({self.message})"

    @property
    def published(self) -> str | None:
        """The reason published in Meta (None for an outage: the checks say that)."""
        if self.kind == UNREACHABLE:
            return None
        return f"pg-role-reporter: {self.log_line}"


def classify(message: str, *, unknown_status: bool) -> PostgresProblem:
    """Sort a failed connect or role query. `unknown_status`: the check layer called it
    UNKNOWN (a settings or privilege problem), not CRITICAL (the server's state)."""
    lowered = message.lower()
    if "permission denied" in lowered and "for database" not in lowered:
        return PostgresProblem(NO_PRIVILEGE, message)
    if unknown_status and "bad connection settings" in lowered:
        return PostgresProblem(SETTINGS, message)
    if any(state in lowered for state in _SERVER_STATES):
        return PostgresProblem(UNREACHABLE, message)
    if any(refusal in lowered for refusal in _LOGIN_REFUSALS):
        return PostgresProblem(LOGIN_FAILED, message)
    return PostgresProblem(UNREACHABLE, message)


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
