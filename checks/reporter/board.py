"""The reporter's latest verdict, for the parts of the daemon that serve or push it.

The loop publishes one RoleSnapshot every turn; the HTTP endpoints and the Consul push read
the latest from their own threads. A snapshot is frozen and replaced whole, so a reader
never sees half a turn.
"""

from __future__ import annotations

import threading
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


class RoleBoard:
    """The latest RoleSnapshot, shared between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: RoleSnapshot | None = None

    def publish(self, snapshot: RoleSnapshot) -> None:
        with self._lock:
            self._latest = snapshot

    def latest(self) -> RoleSnapshot | None:
        """None until the loop's first turn."""
        with self._lock:
            return self._latest
