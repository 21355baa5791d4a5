"""The shipped Icinga 2 CheckCommands: they validate beside the ITL, and a real daemon runs
them against the fixtures and records exactly what the plugin printed."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from harness.ports import free_port
from harness.postgres import PgCluster, wait_for
from tests.integration.plugin_capture import install_wrappers, read_captures

ICINGA2 = Path(os.environ.get("ICINGA2_BIN", "/usr/sbin/icinga2"))
COMMANDS = Path(__file__).resolve().parents[2] / "contrib" / "icinga2" / "pg-ha-checks.conf"
EXPECTED_COMMANDS = {
    f"pg_ha_{name}"
    for name in (
        "alive",
        "role",
        "lag",
        "standbys",
        "slots",
        "connections",
        "archiver",
        "wraparound",
        "transactions",
        "checkpoints",
        "consul_role",
        "mem",
    )
}

# (service name, host, check_command, vars)
SERVICES = [
    ("slots", "primary", "pg_ha_slots", 'vars.pg_ha_slots_names = [ "replica1" ]'),
    ("archiver", "primary", "pg_ha_archiver", "vars.pg_ha_archiver_expect_archiving = true"),
    ("connections", "primary", "pg_ha_connections", 'vars.pg_ha_warning = [ "80%", "40" ]'),
    ("lag", "replica", "pg_ha_lag", 'vars.pg_ha_warning = [ "16MB", "30s" ]'),
    ("mem", "primary", "pg_ha_mem", 'vars.pg_ha_mem_warning = [ "99%" ]'),
]

# The example in the file's header, as written there, on a host with only an IPv6 address
# and a port of its own (the fixtures listen on 127.0.0.1 alone, so that check cannot
# connect: what matters is where it tried, never the monitoring server's own local socket).
EXAMPLE_HOST_ADDRESS6 = "::1"


def documented_example() -> tuple[str, str]:
    """The header's example: (the Host object, the apply Service rule), comment marks off."""
    header = COMMANDS.read_text().split("*/", 1)[0]
    lines = [line.removeprefix(" *") for line in header.splitlines() if line.startswith(" *   ")]
    text = textwrap.dedent("\n".join(lines))
    host = re.search(r"^object Host .*?^\}", text, re.S | re.M)
    service = re.search(r"^apply Service .*?^\}", text, re.S | re.M)
    assert host and service, text
    return host[0] + "\n", service[0] + "\n"


# services defined apart from SERVICES: the no-address host's and the header's example
EXTRA_SERVICES = ("alive-no-address", "pg-lag")

TEMPLATE = (
    "SERVICE::$service.name$\\tSTATE::$service.state_id$\\tPERFDATA::$service.perfdata$"
    "\\tOUTPUT::$service.output$\\tEND::"
)


def _defines(d: Path) -> list[str]:
    # every path the daemon writes to, inside the temp dir; root may run checks (tests only)
    dirs = {"DataDir": "data", "LogDir": "log", "CacheDir": "cache", "SpoolDir": "spool"}
    args = ["-DRunAsUser=root", "-DRunAsGroup=root", f"-DInitRunDir={d / 'run'}"]
    for name, sub in dirs.items():
        (d / sub).mkdir(exist_ok=True)
        args.append(f"-D{name}={d / sub}")
    (d / "run").mkdir(exist_ok=True)
    return args


def _base_config(plugin_dir: Path) -> str:
    # the ITL has "postgres" and "mem" of its own: loading it proves our names do not clash
    return (
        "include <itl>\ninclude <plugins>\n"
        f'const PluginDir = "{plugin_dir}"\n'
        f'include "{COMMANDS}"\n'
    )


def test_shipped_commands_validate_beside_the_itl(tmp_path: Path) -> None:
    if not ICINGA2.exists():
        pytest.fail(f"{ICINGA2} missing: scripts/bootstrap installs icinga2-bin", pytrace=False)
    config = tmp_path / "icinga2.conf"
    config.write_text(_base_config(tmp_path))
    done = subprocess.run(
        [str(ICINGA2), "daemon", "-C", "-c", str(config), *_defines(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    objects = (tmp_path / "cache" / "icinga2.debug").read_text(errors="replace")
    defined = set(re.findall(r'"name":"(pg_ha_[a-z_]+)"', objects))
    assert defined >= EXPECTED_COMMANDS, EXPECTED_COMMANDS - defined


@dataclass(frozen=True)
class Recorded:
    state: int
    perfdata: str
    output: str


@pytest.fixture(scope="module")
def icinga_results(
    pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Recorded], Path, dict[str, int]]]:
    if not ICINGA2.exists():
        pytest.fail(f"{ICINGA2} missing: scripts/bootstrap installs icinga2-bin", pytrace=False)
    pg_cluster.wait_streaming()
    d = tmp_path_factory.mktemp("icinga2")
    plugins, captures, perf = d / "plugins", d / "captures", d / "perf"
    perf.mkdir()
    install_wrappers(plugins, captures)
    ports = {"primary": pg_cluster.primary.port, "replica": pg_cluster.replicas[0].port}
    example_port = free_port()
    parts = [_base_config(plugins), 'object CheckerComponent "checker" { }\n']
    parts.append(
        'object PerfdataWriter "perfdata" {\n'
        f'  service_perfdata_path = "{perf}/service"\n'
        f'  service_temp_path = "{perf}/service.tmp"\n'
        f'  host_perfdata_path = "{perf}/host"\n'
        f'  host_temp_path = "{perf}/host.tmp"\n'
        "  rotation_interval = 1s\n"
        f'  service_format_template = "{TEMPLATE}"\n'
        "}\n"
    )
    for host in ports:
        parts.append(
            f'object Host "{host}" {{\n  address = "127.0.0.1"\n  check_command = "dummy"\n'
            "  enable_active_checks = false\n}\n"
        )
    # a host with no address at all: the check goes to its name, as Nagios does
    parts.append(
        'object Host "localhost" {\n  check_command = "dummy"\n  enable_active_checks = false\n'
        f'  vars.pg_ha_port = {ports["primary"]}\n  vars.pg_ha_user = "monitor"\n'
        f'  vars.pg_ha_passfile = "{pg_cluster.passfile}"\n}}\n'
        'object Service "alive-no-address" {\n  host_name = "localhost"\n'
        '  check_command = "pg_ha_alive"\n  check_interval = 5s\n}\n'
    )
    example_host, example_service = documented_example()
    example_host = (
        example_host.replace('"2001:db8::2"', f'"{EXAMPLE_HOST_ADDRESS6}"')
        .replace("5432", str(example_port))
        .replace('"consul_monitor"', '"monitor"')
        .replace('"hostalive"', '"dummy"')
        .replace("}\n", f'  vars.pg_ha_passfile = "{pg_cluster.passfile}"\n}}\n')
    )
    parts += [example_host, example_service]
    for name, host, command, variables in SERVICES:
        parts.append(
            f'object Service "{name}" {{\n  host_name = "{host}"\n'
            f'  check_command = "{command}"\n  check_interval = 5s\n'
            f'  vars.pg_ha_port = {ports[host]}\n  vars.pg_ha_user = "monitor"\n'
            f'  vars.pg_ha_dbname = "postgres"\n'
            f'  vars.pg_ha_passfile = "{pg_cluster.passfile}"\n  {variables}\n}}\n'
        )
    config = d / "icinga2.conf"
    config.write_text("".join(parts))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    daemon = subprocess.Popen(
        [str(ICINGA2), "daemon", "-c", str(config), *_defines(d)],
        stdout=(d / "daemon.out").open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:

        def recorded() -> dict[str, Recorded] | None:
            text = "".join(
                p.read_text() for p in sorted(perf.glob("service.*")) if p.suffix != ".tmp"
            )
            found = {}
            for match in re.finditer(
                r"SERVICE::(.*?)\tSTATE::(\d)\tPERFDATA::(.*?)\tOUTPUT::(.*?)\tEND::", text, re.S
            ):
                # the first result of each service: the first captured run
                found.setdefault(match[1], Recorded(int(match[2]), match[3], match[4]))
            return found if len(found) == len(SERVICES) + len(EXTRA_SERVICES) else None

        results = wait_for(
            recorded,
            what="Icinga 2 to check every service",
            timeout=90,
            describe=lambda: (d / "daemon.out").read_text()[-3000:],
        )
        yield results, captures, {**ports, "example": example_port}
    finally:
        # the umbrella process forwards SIGTERM to its workers; stop any it leaves behind
        children = psutil.Process(daemon.pid).children(recursive=True)
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)
        _, alive = psutil.wait_procs(children, timeout=30)
        for child in alive:
            child.kill()


@pytest.mark.parametrize(("name", "host", "command", "variables"), SERVICES)
def test_icinga_records_what_the_plugin_printed(
    icinga_results, name: str, host: str, command: str, variables: str
) -> None:
    results, captures, ports = icinga_results
    runs = read_captures(captures)
    if command == "pg_ha_mem":
        mine = [r for r in runs if r.args and r.args[0] != name and "99%" in r.args]
    else:
        subcommand = command.removeprefix("pg_ha_")
        mine = [r for r in runs if r.args[:1] == [subcommand] and str(ports[host]) in r.args]
    # the first check ran once: Icinga wrote that result
    run = mine[0]
    result = results[name]
    assert run.stderr == ""
    assert result.state == run.code
    assert result.perfdata == run.perfdata
    # Icinga keeps the first line up to the '|' as it was, trailing space included
    assert result.output == "\n".join([run.first_line.split("|", 1)[0], *run.long_output])
    assert "cannot connect" not in run.output
    if command == "pg_ha_archiver":
        # set_if = true adds the flag: archive_mode is off on the fixtures
        assert "--expect-archiving" in run.args
        assert run.output == "PG_ARCHIVER CRITICAL - archive_mode is off: WAL is not archived"
    if command == "pg_ha_connections":
        assert run.args.count("-w") == 2


def test_documented_example_on_an_ipv6_only_host(icinga_results) -> None:
    results, captures, ports = icinga_results
    port = str(ports["example"])
    runs = [r for r in read_captures(captures) if r.args[:1] == ["lag"] and port in r.args]
    assert runs, [r.args for r in read_captures(captures)]
    run = runs[0]
    # the thresholds the header documents reach the plugin, one -w/-c per unit
    assert run.args == [
        "lag",
        "-H",
        EXAMPLE_HOST_ADDRESS6,
        "-U",
        "monitor",
        "-c",
        "256MB",
        "-c",
        "5min",
        "-p",
        port,
        "-w",
        "16MB",
        "-w",
        "30s",
    ]
    # it tried the replica's IPv6 address, where nothing listens: never a local socket's OK
    assert results["pg-lag"].state == run.code == 2, run.output
    assert run.stderr == ""


def test_host_without_address_checks_its_name(icinga_results) -> None:
    results, captures, ports = icinga_results
    port = str(ports["primary"])
    runs = [r for r in read_captures(captures) if r.args[:1] == ["alive"] and port in r.args]
    no_address = [r for r in runs if r.args[1:3] == ["-H", "localhost"]]
    assert no_address, [r.args for r in runs]
    # (the fixtures' passfile names 127.0.0.1, not localhost: the login itself may fail)
    assert results["alive-no-address"].state == no_address[0].code
