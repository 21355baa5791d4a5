"""Waiting on a condition with a deadline: the only way tests and the demo wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 0.05,
    max_interval: float | None = None,
    fatal: tuple[type[BaseException], ...] = (),
    describe: Callable[[], str] | None = None,
    error: type[Exception] = TimeoutError,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    An exception from ``condition`` counts as "not yet" (a server that is still starting
    refuses connections) and the last one is named if the deadline passes, unless it is
    one of ``fatal`` (the process waited on has exited: waiting is pointless). The pause
    between polls grows by half each time up to ``max_interval`` (default: stays at
    ``interval``), so long waits poll gently and short ones stay precise.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    delay = interval
    while True:
        try:
            result = condition()
            if result:
                return result
        except fatal:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g}s waiting for {what}"
            if last_error is not None:
                message += f" (last error: {type(last_error).__name__}: {last_error})"
            if describe is not None:
                message += "\n" + describe()
            raise error(message)
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, max_interval or interval)
