"""pg-role-reporter's Consul session and the leader lock it holds with it (the I/O half
of the fence; the decisions are pure, checks/roletag/fencing.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

from checks.consul import ConsulClient, ConsulError
from checks.reporter.options import Options
from checks.roletag.fencing import LockHolder, holder_of, lock_value
from checks.roletag.plan import Observed

log = logging.getLogger("pg-role-reporter")


class LeaderLock:
    """The reporter's Consul session and the leader lock it acquires with it.

    Session (docs/design.md §5): behavior `release`, bound to the node's serfHealth and the
    instance's own checks that go critical only when the instance is really unusable
    (--session-check; by default `<service-id>-alive` when the agent has it). Never bound
    to consul-role, which the fence itself turns critical, nor to lag, which is CRITICAL
    on a replica whose WAL receiver is down, i.e. right after a promotion. A TTL (renewed
    every third of it, an RPC to the servers that writes nothing to raft) ends the lock of
    a reporter that died without releasing it; Consul invalidates at up to twice the TTL.
    """

    def __init__(self, client: ConsulClient, options: Options) -> None:
        self.client = client
        self.options = options
        self.session: str | None = None
        self.node: str = "?"
        self.renewed_at = 0.0
        self.remote_node_logged = False

    @property
    def key(self) -> str:
        return self.options.lock_key

    @property
    def dc(self) -> str | None:
        return self.options.lock_datacenter

    def _checks(self) -> list[str]:
        if self.options.session_checks is not None:
            return ["serfHealth", *self.options.session_checks]
        checks = ["serfHealth"]
        alive = f"{self.options.service_id}-alive"
        try:
            if alive in self.client.agent_checks():
                checks.append(alive)
        except ConsulError as exc:
            log.debug("listing the agent's checks: %s", exc)
        return checks

    def ensure_session(self) -> str:
        now = time.monotonic()
        if self.session is not None:
            if now - self.renewed_at < self.options.session_ttl / 3:
                return self.session
            if self.client.renew_session(self.session, datacenter=self.dc):
                self.renewed_at = now
                return self.session
            log.warning("Consul session %s is gone (invalidated); creating a new one", self.session)
            self.session = None
        body: dict[str, Any] = {
            "Name": f"pg-role-reporter {self.options.service_id}",
            "Behavior": "release",
            "LockDelay": f"{round(self.options.lock_delay * 1000)}ms",
            "TTL": f"{self.options.session_ttl:g}s",
            "Checks": self._checks(),
        }
        try:
            self.session = self.client.create_session(body, datacenter=self.dc)
        except ConsulError as exc:
            if self.dc is None or "node registration" not in str(exc).lower():
                raise
            # The lock lives in another datacenter, whose catalog does not hold this
            # node: a session there can only be bound to its TTL (and to one of that
            # datacenter's nodes, which Consul requires).
            nodes = self.client.catalog_nodes(datacenter=self.dc)
            if not nodes:
                raise ConsulError(
                    f"no node visible in datacenter {self.dc} to hold the session "
                    "(the token needs node:read there)"
                ) from None
            body.update(Node=nodes[0]["Node"], Checks=[])
            self.session = self.client.create_session(body, datacenter=self.dc)
            if not self.remote_node_logged:
                log.info(
                    "lock in datacenter %s: session bound to its TTL only (%gs)",
                    self.dc,
                    self.options.session_ttl,
                )
                self.remote_node_logged = True
        self.renewed_at = now
        info = self.client.session_info(self.session, datacenter=self.dc) or {}
        self.node = str(info.get("Node") or "?") if body["Checks"] else self._local_node()
        log.debug("Consul session %s created: %s", self.session, body)
        return self.session

    def _local_node(self) -> str:
        """This agent's node name (needs agent:read), for a session held on another's."""
        try:
            return str(self.client.self().get("Config", {}).get("NodeName") or "?")
        except ConsulError:
            return "?"

    def holder(self) -> LockHolder | None:
        entry, _ = self.client.kv_get(self.key, datacenter=self.dc, consistent=True)
        return holder_of(entry)

    def acquire(self, observed: Observed) -> bool:
        assert self.session is not None
        value = lock_value(
            node=self.node,
            service_id=self.options.service_id,
            timeline=observed.timeline,
            system_identifier=observed.system_identifier,
        )
        try:
            return self.client.kv_put(self.key, value, acquire=self.session, datacenter=self.dc)
        except ConsulError as exc:
            if exc.status != 500 or "invalid session" not in str(exc).lower():
                raise
        # Invalidated since the last renew (its TTL ran out, a bound check went critical,
        # the servers lost their state): one new session, one more try.
        log.warning("Consul session %s is gone; creating a new one", self.session)
        self.session = None
        self.ensure_session()
        return self.client.kv_put(self.key, value, acquire=self.session, datacenter=self.dc)

    def release(self) -> None:
        if self.session is not None:
            self.client.kv_put(self.key, "", release=self.session, datacenter=self.dc)

    def destroy(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            self.client.destroy_session(session, datacenter=self.dc)
