"""The connection options every check_postgresql subcommand takes, folded into one object.

No password option: argv is readable by every user in ``ps``; libpq reads PGPASSWORD,
~/.pgpass (PGPASSFILE) and service files (PGSERVICE) itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from checks.budget import Budget
from checks.postgres.connection import ConnectionSettings
from checks.runtime import TimeoutType, common_options
from checks.status import Status

ROLE_MISMATCH_STATES = {
    "ok": Status.OK,
    "warning": Status.WARNING,
    "critical": Status.CRITICAL,
}


def role_mismatch_option(other_role: str) -> Callable[..., Any]:
    """``--role-mismatch``: what a check for one role says when run on the other.

    OK by default, so the same check can sit on every instance of ``pg-db`` without
    evicting the ones of the other role from DNS.
    """
    return click.option(
        "--role-mismatch",
        type=click.Choice(list(ROLE_MISMATCH_STATES)),
        default="ok",
        show_default=True,
        callback=lambda ctx, param, value: ROLE_MISMATCH_STATES[value],
        help=f"State to report when the server is a {other_role}.",
    )


def server_and_common_options(
    command: Callable[..., Any], *, pass_budget: bool = False, **help_texts: str
) -> Callable[..., Any]:
    """Adds the server options -H/-p/-U/-d and the common -t/-v; the command receives
    ``settings`` (the server, and -t as ``settings.budget``) and ``verbose``; with
    ``pass_budget`` also ``budget``, for a check whose other lookups (Consul) take a
    share of -t that is none of the connection's business.

    ``help_texts`` (``timeout_help``, ``verbose_help``) reword -t/-v for a non-check.
    """

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        host: str | None,
        port: int | None,
        user: str | None,
        dbname: str | None,
        timeout: float,
        **kwargs: Any,
    ) -> Any:
        settings = ConnectionSettings(
            host=host, port=port, user=user, dbname=dbname, timeout=timeout
        )
        if pass_budget:
            kwargs["budget"] = Budget(timeout)
        return command(*args, settings=settings, **kwargs)

    return common_options(server_options(wrapper), timeout_type=POSTGRES_TIMEOUT, **help_texts)


# Below a second a healthy server would be reported as timed out whenever connecting
# (TCP, TLS, SCRAM authentication) and the query take a little longer on a busy host;
# libpq itself cannot give up a connection attempt sooner than after 2 s.
POSTGRES_TIMEOUT = TimeoutType(
    minimum=1.0,
    why_minimum="a busy server takes longer to connect, and libpq gives up a connect only after 2s",
)


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds -H/-p/-U/-d: which server, as whom; the command receives ``host``, ``port``,
    ``user`` and ``dbname``. pg-role-reporter takes these alone, with its own -t."""
    for option in reversed(
        [
            click.option(
                "-H",
                "--host",
                metavar="HOST",
                help="Server host name, IP address or socket directory (default: PGHOST, "
                "then libpq's default).",
            ),
            click.option(
                "-p",
                "--port",
                type=click.IntRange(1, 65535),
                help="Server port (default: PGPORT, then 5432).",
            ),
            click.option(
                "-U", "--user", metavar="NAME", help="Role to log in as (default: PGUSER)."
            ),
            click.option(
                "-d",
                "--dbname",
                metavar="DBNAME|CONNINFO",
                help="Database name, or a conninfo string / postgresql:// URI as psql takes "
                "(default: PGDATABASE).",
            ),
        ]
    ):
        command = option(command)
    return command
