"""check_postgresql: health checks for a PostgreSQL instance in an HA pair behind Consul.

One click group, one subcommand per question; with no subcommand it runs ``alive``.
"""

from __future__ import annotations

from typing import NoReturn

import click

from checks import plugin
from checks.postgres.commands import alive, lag, role, standbys

NAME = "CHECK_POSTGRESQL"
DEFAULT_COMMAND = "alive"


class DefaultCommandGroup(click.Group):
    """A group that runs ``alive`` when the first argument names no subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else None
        if first is None or (
            first not in self.commands
            and first not in ctx.help_option_names
            and first not in ("-V", "--version")
        ):
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultCommandGroup, context_settings=plugin.CONTEXT_SETTINGS)
@plugin.version_option
def cli() -> None:
    """Nagios-compatible checks of PostgreSQL for high availability behind Consul.

    Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (usage or internal error).
    Connection settings follow libpq: PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSFILE,
    PGSERVICE and the rest are honoured; there is no password option.
    Run 'check_postgresql COMMAND --help' for a command's options.
    """


for _module in (alive, role, lag, standbys):
    cli.add_command(_module.command)


def main(argv: list[str] | None = None) -> NoReturn:
    plugin.run_cli(cli, NAME, argv)


if __name__ == "__main__":
    main()
