"""What every check_postgresql subcommand shares, so that its own file holds only its
question: the command's options, the resource's connection, the "needs pg_monitor"
answer and the run under the contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import nagiosplugin

from checks import adapters, runtime
from checks.output import Report
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import server_and_common_options
from checks.status import CheckFailed, unknown

if TYPE_CHECKING:
    import click
    import psycopg


# what readers take: psycopg is imported only once a check connects
Connection: TypeAlias = "psycopg.Connection[dict[str, Any]]"


def postgres_command(
    name: str, *, pass_budget: bool = False
) -> Callable[[Callable[..., Any]], click.Command]:
    """``@runtime.command`` with the server options and -t/-v: the command receives
    ``settings`` and ``verbose`` (and ``budget`` with ``pass_budget``) before its own
    options."""

    def decorate(function: Callable[..., Any]) -> click.Command:
        options = server_and_common_options(function, pass_budget=pass_budget)
        return runtime.command(name)(options)

    return decorate


class PostgresResource(adapters.Resource):
    """A resource that asks the server given by the connection options."""

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__()
        self.settings = settings
        # the role the check logged in as, named in a GRANT that would fix a privilege
        self.login = ""

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The connection to ask on (:func:`connect`: a new one, or a daemon's kept one)."""
        with connect(self.settings) as conn:
            self.login = conn.info.user
            yield conn


Facts = TypeVar("Facts")


class FactsResource(PostgresResource, Generic[Facts]):
    """A resource whose question is answered by one SQL reader: :meth:`read` gets the
    facts on the connection, :meth:`measure` says what they mean (metrics, details),
    after the connection is given back."""

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        self.facts: Facts | None = None

    def read(self, conn: Connection) -> Facts:
        raise NotImplementedError

    def measure(self, facts: Facts) -> Iterator[nagiosplugin.Metric]:
        raise NotImplementedError

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with self.connection() as conn:
            facts = self.facts = self.read(conn)
        yield from self.measure(facts)


def grant_pg_monitor(login: str, alternative: str = "pg_read_all_stats") -> str:
    return f"GRANT pg_monitor TO {login} (or {alternative})"


def needs_pg_monitor(
    login: str, cannot: str, alternative: str = "pg_read_all_stats"
) -> CheckFailed:
    """UNKNOWN, naming the GRANT: a check that cannot see everything must not say OK."""
    return unknown(f"cannot {cannot} as role {login}: {grant_pg_monitor(login, alternative)}")


def sessions_visible(login: str, hidden: int) -> None:
    """A check that judges sessions must see them all (pg_stat_activity hides other
    roles' queries and states from a role without pg_read_all_stats)."""
    if hidden:
        raise needs_pg_monitor(login, f"see {hidden} other sessions in pg_stat_activity")


def run(
    name: str,
    resource: PostgresResource,
    *contexts: nagiosplugin.Context,
    summary: adapters.Summary,
    verbose: int,
    target: str | Callable[[], str] | None = None,
) -> Report:
    """Evaluate the resource with its contexts under the contract, within --timeout;
    ``target`` names what did not answer in time (default: the server)."""
    settings = resource.settings
    return runtime.run_check(
        name,
        lambda: adapters.Check(resource, *contexts, summary),
        budget=settings.budget,
        target=settings.target if target is None else target,
        verbose=verbose,
    )
