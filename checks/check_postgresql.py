"""check_postgresql: health checks for a PostgreSQL instance in an HA pair behind Consul.

One click group, one subcommand per question; with no subcommand it runs ``alive``.
"""

from __future__ import annotations

import importlib
from typing import NoReturn

import click

from checks import runtime

NAME = "CHECK_POSTGRESQL"
DEFAULT_COMMAND = "alive"


# Each subcommand's module is imported only when it runs (or for --help): Consul runs one
# of them every few seconds and should not pay for the others.
SUBCOMMANDS = {
    "alive": "checks.postgres.commands.alive",
    "role": "checks.postgres.commands.role",
    "lag": "checks.postgres.commands.lag",
    "standbys": "checks.postgres.commands.standbys",
    "slots": "checks.postgres.commands.slots",
    "connections": "checks.postgres.commands.connections",
    "archiver": "checks.postgres.commands.archiver",
    "wraparound": "checks.postgres.commands.wraparound",
    "transactions": "checks.postgres.commands.transactions",
    "checkpoints": "checks.postgres.commands.checkpoints",
    "consul-role": "checks.postgres.commands.consul_role",
}


class LazyDefaultGroup(runtime.CheckGroup):
    """Subcommands loaded on demand; ``alive`` when the first argument names none."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        command: click.Command = importlib.import_module(SUBCOMMANDS[cmd_name]).command
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Only options may follow the program name directly (check_postgresql -H db1):
        # a first word that is not a subcommand is a typo for one, and click says so.
        first = args[0] if args else None
        if first is None or (
            first.startswith("-")
            and first not in ctx.help_option_names
            and first not in ("-V", "--version")
        ):
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group("check_postgresql", cls=LazyDefaultGroup, context_settings=runtime.CONTEXT_SETTINGS)
@runtime.version_option
def cli() -> None:
    """Nagios-compatible checks of PostgreSQL for high availability behind Consul.

    Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (usage or internal error).
    Connection settings follow libpq: PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSFILE,
    PGSERVICE and the rest are honoured; there is no password option.
    Run 'check_postgresql COMMAND --help' for a command's options.
    """


def main(argv: list[str] | None = None) -> NoReturn:
    runtime.run_cli(cli, NAME, argv)


if __name__ == "__main__":
    main()
