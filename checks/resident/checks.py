"""Running a check in the daemon, bounded in time like the executable.

The executable's watchdog ends the process at ``--timeout``; the daemon must not end, so
the check runs in a worker thread and the caller waits for it until the deadline. Past it
the answer is the executable's own timeout line, and the worker's connection is shut down
so it returns soon instead of waiting on a frozen server for ever. One check waiting never
holds up another: each runs in its own thread, on its own leased connection.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeGuard, TypeVar

from checks.consul import KeptHttpClients, kept_http_clients
from checks.output import Report, internal_error
from checks.status import Status

if TYPE_CHECKING:
    import click

    from checks.postgres.connection import ConnectionSource


T = TypeVar("T")

# Consul's httpx clients for every check this daemon runs (consul-role, lag
# --consul-service): kept for the process's life instead of one per run (checks/consul.py).
CONSUL_HTTP = KeptHttpClients()


class Abortable(Protocol):
    def abort(self, worker: int | None = None) -> None: ...

    def target(self) -> str: ...


def within(
    work: Callable[[], T], timeout: float, source: object, *, name: str
) -> tuple[bool, T | None]:
    """``(True, work())`` when it returns within ``timeout`` seconds, else ``(False, None)``
    with the connection the worker leased from ``source`` shut down (when the source can)."""
    answer: list[T] = []
    finished = threading.Event()

    def run() -> None:
        try:
            answer.append(work())
        finally:
            finished.set()

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    if finished.wait(timeout) and answer:
        return True, answer[0]
    if _abortable(source):
        source.abort(worker.ident)
    return False, None


def run_bounded(
    command: click.Command,
    args: Sequence[str],
    name: str,
    timeout: float,
    source: ConnectionSource | None,
    *,
    target: str | None = None,
) -> Report:
    """The report ``command`` run with ``args`` gives, or a CRITICAL timeout report once
    ``timeout`` seconds have passed (worded as the executable's watchdog words it, naming
    ``target``, by default the source's instance)."""
    from checks.runtime import invoke

    def work() -> Report:
        kept_http_clients.set(CONSUL_HTTP)  # this worker thread's own context
        try:
            return invoke(command, args, name, source=source)
        except Exception as exc:  # invoke reports its own errors; this is a bug in it
            return internal_error(name, exc)

    finished, report = within(work, timeout, source, name=f"check {name}")
    if finished and report is not None:
        return report
    if target is None:
        target = source.target() if _abortable(source) else "the server"
    return Report(
        check_name(command, args, name),
        Status.CRITICAL,
        f"timeout: no answer from {target} within {timeout:g}s",
    )


def check_name(command: click.Command, args: Sequence[str], name: str) -> str:
    """The name the check's own reports carry (``PG_ALIVE``), as its watchdog words a
    timeout; ``name`` (the program's, for usage errors) when it has none.

    Each check module names its reports in ``NAME``; a group's subcommand is the first
    argument.
    """
    import click

    if isinstance(command, click.Group) and args:
        chosen = command.get_command(click.Context(command), args[0])
        command = chosen or command
    module = sys.modules.get(getattr(command.callback, "__module__", ""))
    found = getattr(module, "NAME", None)
    return found if isinstance(found, str) else name


def _abortable(source: object) -> TypeGuard[Abortable]:
    return callable(getattr(source, "abort", None)) and callable(getattr(source, "target", None))
