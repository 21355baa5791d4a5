"""``GET /check/<subcommand>?<option>=<value>&...``: a check run in the daemon.

The query is the command line: ``?warning=16MB&warning=30s`` is ``--warning=16MB
--warning=30s``, ``?w=16MB`` is ``-w16MB``, a bare ``?verbose`` is ``--verbose``. Values go
glued to their option, so a value can never be read as another option. The same click
command parses them as the executable would, and the body is what the executable prints.

Options that choose what to connect to or read (``-H -p -U -d``, a conninfo, lag's
``--primary``, the Consul address, a token file, mem's ``--root``) are never taken from a
request: the daemon checks its own instance only, so it
cannot be used to reach other servers or read files. ``--help`` and ``--version`` print
instead of checking: refused too.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import click
from click.core import ParameterSource

from checks.output import Report
from checks.status import Status

CHECK_PREFIX = "/check/"
POSTGRES_NAME = "CHECK_POSTGRESQL"
MEM_NAME = "MEM"
MEM_SUBCOMMAND = "mem"
MEM_TARGET = "/proc"

# parameter names (as click names them) that point a check elsewhere or at a file: lag's
# --primary opens a connection of its own to any conninfo, with the daemon's passfile and
# environment (a request could have its password sent to a listener of its choosing);
# mem's hidden --root reads /proc and /sys under any directory
REFUSED_PARAMS = frozenset(
    {"host", "port", "user", "dbname", "conninfo", "consul_addr", "token_file", "primary", "root"}
)
REFUSED_KEYS = frozenset(
    {"H", "p", "U", "d", *REFUSED_PARAMS, *(name.replace("_", "-") for name in REFUSED_PARAMS)}
)
NOT_OVER_HTTP = frozenset({"h", "help", "V", "version"})

HTTP_STATUS = {
    Status.OK: 200,
    # what Consul's http check reads as warning
    Status.WARNING: 429,
    Status.CRITICAL: 503,
    Status.UNKNOWN: 500,
}


@dataclass(frozen=True)
class CheckRequest:
    """A check to run: the executable's command, its argv, the name its reports carry."""

    command: click.Command
    args: tuple[str, ...]
    name: str
    timeout: float
    uses_postgres: bool


class Refused(Exception):
    """A request that will not run: its HTTP status and the report the body carries."""

    def __init__(self, status: int, report: Report) -> None:
        super().__init__(report.summary)
        self.status = status
        self.report = report


def command_line(query: Sequence[tuple[str, str]]) -> list[str]:
    """The argv a query stands for (see the module's docstring)."""
    args = []
    for key, value in query:
        option = key.replace("_", "-")
        prefix = "-" if len(option) == 1 else "--"
        if value == "":
            args.append(f"{prefix}{option}")
        elif len(option) == 1:
            args.append(f"-{option}{value}")
        else:
            args.append(f"--{option}={value}")
    return args


def subcommands() -> dict[str, str]:
    from checks.check_postgresql import SUBCOMMANDS

    return {**SUBCOMMANDS, MEM_SUBCOMMAND: "checks.mem_check"}


def prepare(subcommand: str, query: Sequence[tuple[str, str]]) -> CheckRequest | None:
    """The check a request asks for; None for an unknown subcommand (404).

    Raises :class:`Refused` (400) for an option that is refused or that click rejects,
    with the report the executable would print for that usage error.
    """
    module_name = subcommands().get(subcommand)
    if module_name is None:
        return None
    name = MEM_NAME if subcommand == MEM_SUBCOMMAND else POSTGRES_NAME
    for key, _ in query:
        option = key.replace("_", "-")
        if option in REFUSED_KEYS or key in REFUSED_KEYS:
            raise Refused(400, _refusal(name, option))
        if option in NOT_OVER_HTTP:
            raise Refused(400, Report(name, Status.UNKNOWN, f"--{option} is not served over HTTP"))
    command: click.Command = importlib.import_module(module_name).command
    args = command_line(query)
    timeout = _parse(command, subcommand, args, name)
    if subcommand == MEM_SUBCOMMAND:
        return CheckRequest(command, tuple(args), name, timeout, uses_postgres=False)
    from checks.check_postgresql import cli

    return CheckRequest(cli, (subcommand, *args), name, timeout, uses_postgres=True)


def _parse(command: click.Command, subcommand: str, args: list[str], name: str) -> float:
    """Parse as the executable will (click runs nothing but conversions here), so a usage
    error is a 400 and the run's own ``--timeout`` is known to bound it."""
    try:
        with command.make_context(subcommand, list(args)) as ctx:
            for param in REFUSED_PARAMS:
                if ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE:
                    raise Refused(400, _refusal(name, param.replace("_", "-")))
            return float(ctx.params.get("timeout") or 10.0)
    except click.ClickException as exc:
        raise Refused(
            400, Report(name, Status.UNKNOWN, f"{exc.format_message()} (see --help)")
        ) from None


def _refusal(name: str, option: str) -> Report:
    return Report(
        name,
        Status.UNKNOWN,
        f"{option}: connection options are not taken from a request: "
        "the daemon checks its own instance only",
    )
