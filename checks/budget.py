"""One time budget per check run, from ``--timeout``, and the share of it each part takes.

A leaf (no click, no nagiosplugin): the connection settings take their share from it
without importing the runtime. The shares are here, in one place, so that they add up:
PostgreSQL gives up (connect_timeout, statement_timeout) and an optional lookup gives up
before the watchdog ends the run, and the check says what was slow instead of a bare
timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

# libpq refuses a connect_timeout below 2 s (it silently raises it to 2).
MIN_CONNECT_TIMEOUT = 2


@dataclass(frozen=True)
class Budget:
    """The seconds a whole run may take (``--timeout``); past them the watchdog answers."""

    seconds: float = 10.0

    @property
    def connection(self) -> float:
        """Connecting to PostgreSQL, and then each statement (statement_timeout)."""
        return self.seconds * 0.8

    @property
    def connect_timeout(self) -> int:
        """libpq's connect_timeout: whole seconds, at least 2."""
        return max(MIN_CONNECT_TIMEOUT, int(self.connection))

    @property
    def consul_request(self) -> float:
        """One request to the Consul agent; consul-role makes two before asking
        PostgreSQL, so a hung agent is reported as such before the watchdog fires."""
        return self.seconds * 0.25

    @property
    def leader_lookup(self) -> float:
        """lag asking Consul for the leader's published WAL position: optional, so short
        (at most 2 s) and the replica's own answer always fits."""
        return min(2.0, self.seconds * 0.2)

    @property
    def other_server(self) -> float:
        """lag asking another PostgreSQL server (the primary, or the upstream when replay
        is paused): optional, so the replica's own answer always fits."""
        return self.seconds * 0.3
