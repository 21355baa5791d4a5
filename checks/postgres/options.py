"""The connection options every check_postgresql subcommand takes, folded into one object.

No password option: argv is readable by every user in ``ps``; libpq reads PGPASSWORD,
~/.pgpass (PGPASSFILE) and service files (PGSERVICE) itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from checks.plugin import common_options
from checks.postgres.connection import ConnectionSettings


def connection_options(command: Callable[..., Any], **help_texts: str) -> Callable[..., Any]:
    """Adds -H/-p/-U/-d and -t/-v; the command receives ``settings`` and ``verbose``.

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
        return command(*args, settings=settings, **kwargs)

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
        wrapper = option(wrapper)
    return common_options(wrapper, **help_texts)
