"""The reporter's latest verdict, for the parts of the daemon that serve or push it.

The loop publishes one RoleSnapshot every turn; the HTTP endpoints and the Consul push read
the latest from their own threads. A snapshot is frozen and replaced whole, so a reader
never sees half a turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RoleSnapshot:
    """What one turn of the loop found and did.

    `role`: "primary", "replica" or "unknown" (PostgreSQL did not answer); `tag`: the role
    tag the service carries in Consul after the turn (None: none, or Consul did not
    answer); `fenced_reason`: why the leader tag is withheld, as published in Meta;
    `observed_at`: time.monotonic() of the turn.
    """

    role: str
    tag: str | None
    holds_lock: bool
    fenced_reason: str | None
    observed_at: float

    def verdict(self) -> tuple[object, ...]:
        """What makes a check's verdict stale when it changes: the role, the tag, the lock,
        the fence (not the time of the turn)."""
        return (self.role, self.tag, self.holds_lock, self.fenced_reason)


def verdict_of(snapshot: RoleSnapshot | None) -> tuple[object, ...] | None:
    return None if snapshot is None else snapshot.verdict()


class RoleBoard:
    """The latest RoleSnapshot, shared between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # every turn
        self._published = threading.Condition(self._lock)
        # only a turn whose verdict differs from the one before (and interrupt())
        self._changed = threading.Condition(self._lock)
        self._latest: RoleSnapshot | None = None
        self._interrupted = False
        # wakes the loop for a turn now (its Wakeup's set); None: no loop turning yet
        self._wake_loop: Callable[[], None] | None = None

    def publish(self, snapshot: RoleSnapshot) -> None:
        with self._lock:
            previous, self._latest = self._latest, snapshot
            self._published.notify_all()
            if verdict_of(previous) != snapshot.verdict():
                self._changed.notify_all()

    def wait_newer(self, seen: RoleSnapshot | None, timeout: float) -> RoleSnapshot | None:
        """The latest snapshot as soon as it is another than `seen`, or after `timeout`
        seconds whatever it is: the push re-runs its checks the moment a turn changed
        the role, instead of polling the board."""
        with self._published:
            self._published.wait_for(lambda: self._latest is not seen, timeout)
            return self._latest

    def wait_changed(self, seen: RoleSnapshot | None, timeout: float) -> RoleSnapshot | None:
        """The latest snapshot as soon as its verdict differs from `seen`'s, or after
        `timeout` seconds (or an interrupt()) whatever it is. A waiter here sleeps through
        the turns that change nothing: a wake-up a turn costs ~0.1 ms of CPU on a small VM
        (docs/design.md §8)."""
        with self._lock:
            if not self._interrupted and verdict_of(self._latest) == verdict_of(seen):
                self._changed.wait(timeout)
            return self._latest

    def turn_on_request(self, wake: Callable[[], None]) -> None:
        """The loop's wake-up, for request_turn() to call."""
        self._wake_loop = wake

    def request_turn(self) -> None:
        """Have the loop turn now rather than after its --interval (a pushed verdict waits
        for a turn: without one per push, a TTL shorter than push interval + --interval
        ran out between pushes)."""
        if (wake := self._wake_loop) is not None:
            wake()

    def interrupt(self) -> None:
        """Wake every wait_changed() now and end every later one at once (a stop)."""
        with self._lock:
            self._interrupted = True
            self._changed.notify_all()

    def latest(self) -> RoleSnapshot | None:
        """None until the loop's first turn."""
        with self._lock:
            return self._latest
