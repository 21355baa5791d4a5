"""Running a check in the daemon, bounded in time like the executable.

The executable's watchdog ends the process at ``--timeout``; the daemon must not end, so
the check runs in a worker thread and the caller waits for it until the deadline. Past it
the answer is the executable's own timeout line, and the worker's connection is shut down
so it returns soon instead of waiting on a frozen server for ever. One check waiting never
holds up another: each runs in its own thread, on its own leased connection.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeGuard

from checks.output import Report, internal_error
from checks.status import Status

if TYPE_CHECKING:
    import click

    from checks.postgres.connection import ConnectionSource


class Abortable(Protocol):
    def abort(self, worker: int | None = None) -> None: ...

    def target(self) -> str: ...


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

    answer: list[Report] = []
    finished = threading.Event()

    def work() -> None:
        try:
            answer.append(invoke(command, args, name, source=source))
        except BaseException as exc:  # invoke reports its own errors; this is a bug in it
            answer.append(internal_error(name, exc))
        finally:
            finished.set()

    worker = threading.Thread(target=work, name=f"check {name}", daemon=True)
    worker.start()
    if finished.wait(timeout):
        return answer[0]
    abortable: Abortable | None = source if _abortable(source) else None
    if abortable is not None:
        abortable.abort(worker.ident)
    if target is None:
        target = abortable.target() if abortable is not None else "the server"
    return Report(name, Status.CRITICAL, f"timeout: no answer from {target} within {timeout:g}s")


def _abortable(source: object) -> TypeGuard[Abortable]:
    return callable(getattr(source, "abort", None)) and callable(getattr(source, "target", None))
