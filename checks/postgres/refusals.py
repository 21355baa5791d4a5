"""Which failed connects are a refused login and which an outage (the Cause of a connect).

A login failure is not an outage: the server answered and refused *us*, and the fix is the
role, its password or pg_hba.conf, not the server. libpq reports a refused login as a FATAL
server message during the connect and gives no SQLSTATE for errors raised during the
startup packet exchange, so the server's words decide (PostgreSQL's auth.c and postinit.c,
English lc_messages).

Leaf module: standard library and checks.status only.
"""

from __future__ import annotations

from checks.status import Cause

# "the server is there but refuses this login"
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


def connect_cause(message: str, *, timed_out: bool = False) -> Cause:
    """The Cause of a failed connect from its message (every server libpq tried);
    `timed_out`: libpq gave up waiting for an answer."""
    lowered = message.lower()
    if any(state in lowered for state in _SERVER_STATES):
        return Cause.UNREACHABLE
    if any(refusal in lowered for refusal in _LOGIN_REFUSALS):
        return Cause.LOGIN_REFUSED
    return Cause.TIMEOUT if timed_out else Cause.UNREACHABLE
