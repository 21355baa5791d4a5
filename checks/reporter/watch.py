"""The Consul side of pg-role-reporter that runs in its own threads: blocking queries on
the agent service and on the leader lock, and the log lines about Consul trouble."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from checks.consul import ConsulClient, ConsulError, ConsulSettings, ConsulUnreachable
from checks.reporter.backoff import UNREACHABLE_RETRY_SECONDS, Backoff
from checks.reporter.options import Options
from checks.reporter.wakeup import Wakeup
from checks.roletag.fencing import holder_of

log = logging.getLogger("pg-role-reporter")

# The blocking query's wait: long enough to be idle, short enough that a silently dead
# TCP connection is noticed in well under a minute. The agent is local: a restart resets
# the connection, which is noticed at once. Each answer costs ~1.5 ms of CPU (httpx, a
# wake-up): at 10 s the two watches were a tenth of the resident daemon's cost
# (docs/design.md §8).
WATCH_WAIT_SECONDS = 30.0


class ConsulTrouble:
    """One log line when a Consul problem starts or changes, one when it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: str | None = None

    def failed(self, error: ConsulError, retry_in: float) -> None:
        text = str(error)
        with self._lock:
            if text == self._current:
                return
            self._current = text
        level = logging.WARNING if isinstance(error, ConsulUnreachable) else logging.ERROR
        log.log(level, "Consul: %s; retrying in %.1fs (and on)", text, retry_in)

    def ok(self) -> None:
        with self._lock:
            if self._current is None:
                return
            self._current = None
        log.info("Consul agent answering again")


class ServiceWatch(threading.Thread):
    """Holds a blocking query on the agent service; `changed` fires on every new answer."""

    def __init__(self, settings: ConsulSettings, service_id: str, trouble: ConsulTrouble) -> None:
        super().__init__(name="consul-watch", daemon=True)
        self.settings = settings
        self.service_id = service_id
        self.trouble = trouble
        # set on every new answer (and by the lock watch and a stop): wakes the loop
        self.changed = Wakeup()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._service: dict[str, Any] | None = None

    @property
    def service(self) -> dict[str, Any] | None:
        with self._lock:
            return self._service

    def _publish(self, service: dict[str, Any] | None) -> None:
        with self._lock:
            self._service = service
        self.changed.set()

    def run(self) -> None:
        backoff = Backoff()
        content_hash: str | None = None
        with ConsulClient(self.settings) as client:
            while not self.stopping.is_set():
                try:
                    service, new_hash = client.agent_service(
                        self.service_id,
                        index_hash=content_hash,
                        wait=WATCH_WAIT_SECONDS if content_hash else None,
                    )
                except ConsulError as exc:
                    content_hash = None
                    self._publish(None)
                    delay = backoff.after(exc)
                    self.trouble.failed(exc, delay)
                    self.stopping.wait(delay)
                    continue
                except Exception as exc:
                    # A bug or an answer we cannot read must not end the thread quietly:
                    # the loop would then plan against the last service it saw for ever,
                    # and a reverted tag after a reload would never come back.
                    content_hash = None
                    self._publish(None)
                    delay = backoff.refused()
                    log.error(
                        "service watch: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay
                    )
                    self.stopping.wait(delay)
                    continue
                backoff.reset()
                self.trouble.ok()
                if new_hash != content_hash or self.service is None:
                    self._publish(service)
                content_hash = new_hash or None


class LockWatch(threading.Thread):
    """A blocking query on the lock key: a release or an invalidated session wakes the
    loop at once (Consul answers the moment the key's index moves)."""

    def __init__(self, settings: ConsulSettings, options: Options, wake: Wakeup) -> None:
        super().__init__(name="consul-lock-watch", daemon=True)
        self.settings = settings
        self.options = options
        self.wake = wake
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._entry: dict[str, Any] | None = None
        self._known = False
        self._free_since: float | None = None

    def current(self) -> tuple[bool, dict[str, Any] | None]:
        """(whether the last answer is current, the key's entry in it)."""
        with self._lock:
            return self._known, self._entry

    def free_for(self) -> float | None:
        """Seconds the lock has been known free (nobody is leader), else None."""
        with self._lock:
            if not self._known or self._free_since is None:
                return None
            return time.monotonic() - self._free_since

    def _publish(self, known: bool, entry: dict[str, Any] | None) -> None:
        with self._lock:
            self._known, self._entry = known, entry
            free = known and holder_of(entry) is None
            if not free:
                self._free_since = None
            elif self._free_since is None:
                self._free_since = time.monotonic()

    def run(self) -> None:
        index = 0
        with ConsulClient(self.settings) as client:
            while not self.stopping.is_set():
                try:
                    entry, new_index = client.kv_get(
                        self.options.lock_key,
                        datacenter=self.options.lock_datacenter,
                        index=index or None,
                        wait=WATCH_WAIT_SECONDS if index else None,
                    )
                except ConsulError as exc:
                    # the main loop reports Consul trouble; here only wait and retry
                    log.debug("lock watch: %s", exc)
                    self._publish(False, None)
                    index = 0
                    self.stopping.wait(UNREACHABLE_RETRY_SECONDS)
                    continue
                except Exception as exc:
                    # never end quietly: "lock state unknown" keeps the loop fail-closed
                    log.error("lock watch: %s: %s", type(exc).__name__, exc)
                    self._publish(False, None)
                    index = 0
                    self.stopping.wait(UNREACHABLE_RETRY_SECONDS)
                    continue
                self._publish(True, entry)
                if index and new_index != index:
                    self.wake.set()
                # an index that went backwards (a restored or new cluster): start over
                index = new_index if new_index >= index else 0
