"""How long to wait before asking the Consul agent again (pure logic, clock injected).

docs/design.md §5 (observed): the common outage is the local agent restarting, and a long
exponential backoff turned a 12 s restart into 12-14 s without a leader in DNS. So a
refused connection is retried about once a second; only errors that repeat while the agent
answers (403, 5xx, a missing service) back off, jittered, up to a cap.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from checks.consul import ConsulError

UNREACHABLE_RETRY_SECONDS = 1.0
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


class Backoff:
    def __init__(
        self,
        *,
        first: float = FIRST_BACKOFF_SECONDS,
        cap: float = MAX_BACKOFF_SECONDS,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.first = first
        self.cap = cap
        self.rand = rand
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def after(self, error: ConsulError) -> float:
        """The delay after `error`, chosen here for every caller: an agent that does not
        answer, or does not know the service yet (a reload in progress), is retried about
        once a second; an error it answers with backs off."""
        from checks.consul import ConsulNotFound, ConsulUnreachable

        if isinstance(error, (ConsulUnreachable, ConsulNotFound)):
            return self.unreachable()
        return self.refused()

    def unreachable(self) -> float:
        """Delay after a refused or timed-out connection: about once a second."""
        self.failures = 0
        return UNREACHABLE_RETRY_SECONDS * (0.9 + 0.2 * self.rand())

    def refused(self) -> float:
        """Delay after an answer that is an error: 'equal jitter' exponential, capped."""
        ceiling = min(self.cap, self.first * 2.0**self.failures)
        self.failures += 1
        return ceiling / 2 + ceiling / 2 * self.rand()
