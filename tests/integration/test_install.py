"""README's "Install on a database host", every command as written, on this machine as root
(as CI runs): the Debian package built from the tree and installed with apt-get, then the
checks against a real primary and replica and the reporter through one failover against a
real Consul agent, all through the *installed* executables and Debian's own Python; the
man page; a clean purge; then the venv path. Both leave the machine as they found it: the
suite's own .venv never sees the package, and everything installed here is removed.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from harness import pgbin
from harness.consul import ConsulAgent
from harness.postgres import PgCluster, PgServer
from harness.waiting import wait_until
from tests.integration.fixtures_consul import ConsulAgentFactory
from tests.integration.reporter_deployment import (
    FOLLOWER,
    LEADER,
    leaders_http,
    service_definition,
    wait_for_dns,
)
from tests.plugin_run import PluginRun, run_plugin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pg-ha-checks"
EXECUTABLES = ("check_postgresql", "mem_check", "pg-role-reporter")
# No venv and no /usr/local on PATH while the package is tested: what runs is the package's.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The roles and password exactly as README's SQL creates them.
CHECK_ROLE, REPORTER_ROLE = "consul_monitor", "role_reporter"
# what the DBA types at psql's \\password prompts
README_PASSWORD = "typed-at-the-prompt"
# What the package installs, each of which the purge must take away again.
PACKAGE_PATHS = [
    Path("/usr/share/pg-ha-checks"),
    Path("/usr/share/doc/pg-ha-checks"),
    Path("/lib/systemd/system/pg-role-reporter.service"),
    Path("/usr/share/man/man1/check_postgresql.1.gz"),
    *(Path("/usr/bin") / name for name in EXECUTABLES),
    *(Path("/usr/lib/nagios/plugins") / name for name in EXECUTABLES),
]
VENV = Path("/opt/pg-ha-checks")
LOCAL_BIN = Path("/usr/local/bin")
LOCAL_MAN = Path("/usr/local/share/man/man1")


@dataclass(frozen=True)
class Readme:
    deb: str
    venv: str
    sql: str
    purge: str


def readme() -> Readme:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Install on a database host", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, re.S | re.M)
    sh = [body for lang, body in blocks if lang == "sh"]
    sql = [body for lang, body in blocks if lang == "sql"]
    purge = re.findall(r"`(apt-get purge [^`]+)`", section)
    assert len(sh) == 2 and len(sql) == 1 and len(purge) == 1, blocks
    return Readme(deb=sh[0], venv=sh[1], sql=sql[0], purge=purge[0])


def installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], capture_output=True, text=True
    )
    return done.stdout.startswith("ii")


@dataclass
class Machine:
    """Where README's commands run: a copy of the checkout, root's environment without the
    venv, apt told to wait for the machine-wide lock and to assume yes (no terminal)."""

    checkout: Path
    env: dict[str, str]

    def run(self, script: str, *, timeout: float = 300) -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.checkout,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    if os.geteuid() != 0:
        pytest.fail("installs a Debian package and /opt/pg-ha-checks: run as root (CI does)")
    # One such test per machine at a time: others' runs of this suite share dpkg and /opt.
    lock = open(Path(tempfile.gettempdir()) / "pg-ha-checks-install-test.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        if installed(PACKAGE):
            pytest.fail(f"{PACKAGE} is already installed here; this test installs and purges it")
        d = tmp_path_factory.mktemp("install")
        checkout = d / "pg-ha-checks"
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        for name in filter(None, (f.decode() for f in files)):
            source = ROOT / name
            if source.exists():
                (checkout / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, checkout / name)
        apt_conf = d / "apt.conf"
        apt_conf.write_text('APT::Get::Assume-Yes "true";\nDPkg::Lock::Timeout "600";\n')
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PG", "CONSUL_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(PATH=SYSTEM_PATH, APT_CONFIG=str(apt_conf), DEBIAN_FRONTEND="noninteractive")
        yield Machine(checkout, env)
    finally:
        lock.close()


def psql_on_a_terminal(args: list[str], password: str, *, timeout: float = 60) -> str:
    """Runs psql on a pseudo-terminal, as a DBA types into it: its `\\password` prompts
    read /dev/tty, and each is answered with `password`. Returns what psql printed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: psql, with the terminal as its controlling one
        try:
            os.execv(args[0], args)
        finally:
            os._exit(127)
    output, answered = b"", 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, 9)
                raise AssertionError(f"psql still running after {timeout}s:\n{output!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: psql exited and the terminal closed
                break
            if not chunk:
                break
            output += chunk
            prompts = output.count(b"Enter new password") + output.count(b"Enter it again")
            while answered < prompts:
                os.write(fd, password.encode() + b"\n")
                answered += 1
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text


@pytest.fixture(scope="module")
def cluster(machine: Machine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """A primary and a replica with README's two roles, made by README's SQL as written,
    typed into psql on a terminal; the server logs every DDL statement meanwhile."""
    found = pgbin.discover_installations()
    if not found:
        pytest.fail("no PostgreSQL installation found; run ./scripts/bootstrap --test")
    with PgCluster(pgbin.usable_installation(found[0]), replicas=1) as cluster:
        psql = shutil.which("psql")
        assert psql, "psql (postgresql-client) missing: scripts/bootstrap installs postgresql"
        primary = cluster.primary
        primary.set_config(log_statement="ddl")
        script = tmp_path_factory.mktemp("sql") / "roles.sql"
        script.write_text(readme().sql)
        log_start = primary.logfile.stat().st_size
        # psql -f: the script comes from the file, the terminal is the DBA's
        psql_on_a_terminal(
            [psql, "-X", "-v", "ON_ERROR_STOP=1", "-h", primary.host, "-p", str(primary.port),
             "-U", "postgres", "-d", "postgres", "-f", str(script)],
            README_PASSWORD,
        )  # fmt: skip
        logged = primary.logfile.read_bytes()[log_start:].decode(errors="replace")
        assert "CREATE ROLE consul_monitor" in logged  # the server did log the DDL
        # ... and never a password, only what \password sends: a hash (SCRAM, or md5 where
        # password_encryption says so)
        hashed = r"SCRAM-SHA-256\$|md5[0-9a-f]{32}'"
        assert not re.search(rf"PASSWORD\s+'(?!{hashed})", logged, re.I), logged
        primary.set_config(log_statement=None)
        cluster.wait_streaming()
        yield cluster


@pytest.fixture(scope="module")
def passfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pgpass") / "pgpass"
    path.write_text(
        "".join(f"127.0.0.1:*:*:{role}:{README_PASSWORD}\n" for role in (CHECK_ROLE, REPORTER_ROLE))
    )
    path.chmod(0o600)
    return path


def libpq_env(server: PgServer, passfile: Path, role: str) -> dict[str, str]:
    return {
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": role,
        "PGDATABASE": "postgres",
        "PGPASSFILE": str(passfile),
    }


def plugin(executable: str, *args: str, env: Mapping[str, str]) -> PluginRun:
    run = run_plugin([executable, *args], env={"PATH": SYSTEM_PATH, **env}, timeout=60)
    run.assert_contract()
    return run


@pytest.fixture(scope="module")
def deb(machine: Machine) -> Iterator[Machine]:
    """README's Debian commands, as written: build tools, scripts/build-deb (which fails on
    any lintian error or warning), apt-get install of the built file."""
    try:
        machine.run(readme().deb)
        yield machine
    finally:
        if installed(PACKAGE):
            machine.run(f"apt-get purge -o DPkg::Lock::Timeout=600 -y {PACKAGE}")


def test_the_package_installs_where_the_tools_look(deb: Machine) -> None:
    assert installed(PACKAGE)
    debs = list(deb.checkout.glob("pg-ha-checks_*_all.deb"))
    assert [p.name for p in debs] == [f"pg-ha-checks_{version()}_all.deb"]
    for path in PACKAGE_PATHS:
        assert path.exists(), path
    for name in EXECUTABLES:
        link = Path("/usr/lib/nagios/plugins") / name
        assert link.is_symlink() and link.resolve() == Path("/usr/bin") / name
        assert (Path("/usr/bin") / name).read_text().startswith("#!/usr/bin/python3\n")
    # the unit is there for systemctl, not enabled: each host needs its secrets first
    assert not list(Path("/etc/systemd/system").rglob("pg-role-reporter*"))
    units = sorted((ROOT / "contrib" / "systemd").glob("*.service"))
    assert units
    for unit in units:
        text = (Path("/lib/systemd/system") / unit.name).read_text()
        execs = re.findall(r"^ExecStart=(\S+)", text, re.M)
        assert execs == ["/usr/bin/pg-role-reporter"], (unit.name, execs)
    examples = Path("/usr/share/doc/pg-ha-checks/examples")
    for example in (
        "consul-conf.d/pg-db.json",
        "consul-conf.d/prepared-queries/apply",
        "nagios/pg-ha-checks.cfg",
        "icinga2/pg-ha-checks.conf",
    ):
        assert (examples / example).is_file(), example
    if (ROOT / "contrib" / "haproxy").is_dir():
        assert (examples / "haproxy").is_dir()
    assert "License: PostgreSQL" in Path("/usr/share/doc/pg-ha-checks/copyright").read_text()


def version() -> str:
    text = (ROOT / "checks" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "(.+)"$', text, re.M)
    assert found
    return found[1]


def test_installed_code_runs_on_debians_python_and_libraries(deb: Machine) -> None:
    probe = (
        "import sys; sys.path.insert(0, '/usr/share/pg-ha-checks')\n"
        "import checks, click, httpx, nagiosplugin, psutil, psycopg\n"
        "for m in (checks, click, httpx, nagiosplugin, psutil, psycopg): print(m.__file__)\n"
    )
    files = deb.run(f"/usr/bin/python3 -c {shlex.quote(probe)}").split()
    assert files[0] == "/usr/share/pg-ha-checks/checks/__init__.py"
    assert all(f.startswith("/usr/lib/python3/dist-packages/") for f in files[1:]), files


def test_installed_checks_against_primary_and_replica(
    deb: Machine, cluster: PgCluster, passfile: Path
) -> None:
    primary = libpq_env(cluster.primary, passfile, CHECK_ROLE)
    replica = libpq_env(cluster.replicas[0], passfile, CHECK_ROLE)
    for executable in ("/usr/bin/check_postgresql", "/usr/lib/nagios/plugins/check_postgresql"):
        run = plugin(executable, "role", "--expect", "primary", env=primary)
        assert run.status == "OK", run.stdout
        run = plugin(executable, "role", "--expect", "replica", env=replica)
        assert run.status == "OK", run.stdout
    for args, env in (
        (("alive",), primary),
        (("standbys", "--min-standbys", "1"), primary),
        (("lag", "-w", "16MB", "-c", "1GB"), replica),
    ):
        run = plugin("/usr/bin/check_postgresql", *args, env=env)
        assert run.status == "OK", run.stdout
    run = plugin("/usr/lib/nagios/plugins/mem_check", "-w", "99%", "-c", "100%", env={})
    assert run.first_line.startswith("MEM "), run.stdout


@dataclass
class InstalledReporter:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def test_installed_reporter_follows_one_failover(
    deb: Machine,
    cluster: PgCluster,
    passfile: Path,
    consul_agent_factory: ConsulAgentFactory,
    tmp_path: Path,
) -> None:
    servers = {"pg-db-1": cluster.primary, "pg-db-2": cluster.replicas[0]}
    agent: ConsulAgent = consul_agent_factory(start=False)
    for service_id, server in servers.items():
        agent.write_config(
            service_id, service_definition(service_id, server, guard_check=False, agent=agent)
        )
    agent.start()
    reporters: list[InstalledReporter] = []
    try:
        for service_id, server in servers.items():
            log = tmp_path / f"{service_id}.log"
            env = {**deb.env, **libpq_env(server, passfile, REPORTER_ROLE), **agent.env()}
            process = subprocess.Popen(
                ["pg-role-reporter", "--service-id", service_id, "--interval", "0.5"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            reporters.append(InstalledReporter(process, log))
            # Debian's interpreter running the package's launcher (once it has exec'd)
            cmdline = wait_until(
                lambda p=process.pid: psutil.Process(p).cmdline(),
                timeout=10,
                what="the reporter's command line",
            )
            assert cmdline[:2] == ["/usr/bin/python3", "/usr/bin/pg-role-reporter"], cmdline

        def logs() -> str:
            return "\n".join(r.log.read_text(errors="replace") for r in reporters)

        wait_until(
            lambda: (
                leaders_http(agent) == {"pg-db-1"}
                and leaders_http(agent, tag="follower") == {"pg-db-2"}
            ),
            timeout=20,
            what="leader pg-db-1, follower pg-db-2",
            describe=logs,
        )
        wait_for_dns(agent, LEADER, {servers["pg-db-1"].port})
        wait_for_dns(agent, FOLLOWER, {servers["pg-db-2"].port})

        servers["pg-db-1"].stop()
        wait_for_dns(agent, LEADER, set())
        cluster.promote(servers["pg-db-2"])
        wait_until(
            lambda: leaders_http(agent) == {"pg-db-2"},
            timeout=20,
            what="leader pg-db-2 after the failover",
            describe=logs,
        )
        wait_for_dns(agent, LEADER, {servers["pg-db-2"].port})
        assert all(r.process.poll() is None for r in reporters), logs()
    finally:
        for reporter in reporters:
            reporter.stop()


def test_man_page(deb: Machine) -> None:
    env = {**deb.env, "MANPAGER": "cat", "MANWIDTH": "80"}
    assert deb.run("man -w check_postgresql").strip() == "/usr/share/man/man1/check_postgresql.1.gz"
    page = subprocess.run(
        ["man", "check_postgresql"], env=env, capture_output=True, text=True, timeout=60
    )
    assert page.returncode == 0, page.stderr
    text = " ".join(page.stdout.split())  # man justifies lines
    assert "NAME check_postgresql - Nagios-compatible PostgreSQL checks" in text
    assert "SYNOPSIS" in text


# What systemctl answers in the upgrade test below: every unit enabled and running.
SYSTEMCTL_STUB = """#!/bin/sh
echo "systemctl $*" >>"$CALLS"
case " $* " in *" is-enabled "*) echo enabled ;; esac
exit 0
"""


def test_an_upgrade_restarts_and_a_removal_stops_the_running_reporters(
    deb: Machine, tmp_path: Path
) -> None:
    """On an upgrade dpkg runs `postinst configure <old version>`. Under systemd, an enabled
    pg-role-reporter and every running pg-role-reporter@ instance must come back on the new
    modules and units: left alone they run the old code (a fence fix, say) until the next
    reboot, with systemd holding the old unit files. A removal (`prerm remove`) must stop
    them rather than leave them running on deleted modules. Run as dpkg would, in a mount
    namespace whose /run says "systemd is running", with systemctl recording what it is
    asked and the machine's policy-rc.d (a container's "never start anything") replaced by
    "allowed"."""
    (debfile,) = deb.checkout.glob("pg-ha-checks_*_all.deb")
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(debfile), str(control)], check=True)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in {
        "systemctl": SYSTEMCTL_STUB,
        "deb-systemd-helper": '#!/bin/sh\necho "deb-systemd-helper $*" >>"$CALLS"\n',
        "py3compile": "#!/bin/sh\n",
        "policy-rc.d": "#!/bin/sh\nexit 0\n",
    }.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    calls = tmp_path / "calls"
    calls.touch()
    script = (
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && "
        f"mount --bind {stubs}/policy-rc.d /usr/sbin/policy-rc.d 2>/dev/null; "
        f"sh -e {control}/postinst configure 0.0.1 && "
        f"exec sh -e {control}/prerm remove"
    )
    env = {**deb.env, "PATH": f"{stubs}:{SYSTEM_PATH}", "CALLS": str(calls)}
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    asked = calls.read_text().splitlines()
    assert any("daemon-reload" in line for line in asked), asked
    assert any(
        re.search(r"systemctl .*\brestart pg-role-reporter\.service$", line) for line in asked
    ), asked
    assert any(
        re.search(r"systemctl .*\btry-restart pg-role-reporter@\*\.service$", line)
        for line in asked
    ), asked
    # and a removal stops them all rather than leave them running on deleted modules
    for unit in ("pg-role-reporter.service", "pg-role-reporter@*.service"):
        assert any(line.endswith(f"stop {unit}") for line in asked), asked


def test_purge_removes_everything_and_leaves_the_suite_alone(deb: Machine) -> None:
    deb.run(readme().purge)
    assert not installed(PACKAGE)
    left = [str(p) for p in PACKAGE_PATHS if p.exists() or p.is_symlink()]
    assert not left, left
    # py3compile's byte code went with it (prerm's py3clean), nothing else was removed
    assert installed("python3-psycopg")
    # the suite's venv still runs its own checkout and its own libraries
    probe = "import checks, psycopg; print(checks.__file__); print(psycopg.__file__)"
    mine, lib = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.split()
    assert mine == str(ROOT / "checks" / "__init__.py")
    assert lib.startswith(sys.prefix), lib


def test_venv_install_as_written(machine: Machine, cluster: PgCluster, passfile: Path) -> None:
    links = [LOCAL_BIN / name for name in EXECUTABLES]
    pages = [LOCAL_MAN / page.name for page in (ROOT / "man").glob("*.1")]
    there = [str(p) for p in (VENV, *links, *pages) if p.exists() or p.is_symlink()]
    if there:
        pytest.fail(f"already on this machine, not ours to replace: {there}")
    man_dir_existed = LOCAL_MAN.is_dir()
    try:
        machine.run(readme().venv)
        env = {**machine.env, "PATH": f"{LOCAL_BIN}:{SYSTEM_PATH}"}
        for link in links:
            assert link.resolve() == VENV / "bin" / link.name
        run = run_plugin(
            ["check_postgresql", "role", "--expect", "primary"],
            env={**env, **libpq_env(cluster.primary, passfile, CHECK_ROLE)},
        )
        run.assert_contract()
        assert run.status == "OK", run.stdout
        # found through the link in /usr/local/share/man (man names the file it points to)
        assert (LOCAL_MAN / "check_postgresql.1").is_symlink()
        found = subprocess.run(
            ["man", "-w", "check_postgresql"], env=env, capture_output=True, text=True
        )
        assert found.stdout.strip() == str(VENV / "share/man/man1/check_postgresql.1"), found
    finally:
        for path in (*links, *pages):
            path.unlink(missing_ok=True)
        shutil.rmtree(VENV, ignore_errors=True)
        if not man_dir_existed and LOCAL_MAN.is_dir() and not any(LOCAL_MAN.iterdir()):
            LOCAL_MAN.rmdir()
