"""What wakes the reporter's loop before its interval: Consul's watches, a stop, and the
kept PostgreSQL connection itself.

A threading.Event cannot be waited on together with a socket, so this one is a pipe: set
means a byte is in it. The loop then sleeps in one poll(2) on the pipe and on the kept
connection's socket, which PostgreSQL makes readable the moment the session ends (a crash:
backends exit when the postmaster dies; a shutdown; a terminated backend). Such an end is
then seen at once instead of at the next poll. A promotion is not: PostgreSQL sends an idle
session nothing then (docs/design.md §3).
"""

from __future__ import annotations

import contextlib
import os
import select


class Wakeup:
    """threading.Event's set, clear, is_set and wait, also able to wait on a descriptor.

    Never closed: the SIGTERM handler may set it at any moment until the process ends.
    No lock: set() may run in a signal handler that interrupted clear() in the same
    thread. Every interleaving ends either with the flag set (wait() looks at it before
    it sleeps) or with the flag clear and the pipe drained.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._set = False

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._write, b"!")

    def clear(self) -> None:
        self._set = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Until set or `timeout` seconds passed; whether set."""
        if not self._set:
            self._poll(timeout, None)
        return self._set

    def wait_or_readable(self, timeout: float | None, fd: int) -> bool:
        """Until set, `fd` is readable (or closed) or `timeout` seconds passed; whether
        `fd` ended the wait."""
        if self._set:
            return False
        return self._poll(timeout, fd)

    def _poll(self, timeout: float | None, fd: int | None) -> bool:
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        if fd is not None:
            poller.register(fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0, round(timeout * 1000)))
        return fd is not None and any(ready_fd == fd for ready_fd, _ in ready)


def readable(fd: int) -> bool:
    """Whether `fd` has something to read (or is closed) right now."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
