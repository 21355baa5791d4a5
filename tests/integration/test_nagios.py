"""The shipped Nagios 4 command definitions, run by a real Nagios against the fixtures.

Nagios runs our executables through wrappers that record what they printed; status.dat
must hold exactly that first line, long output and perfdata, and the exit code as state.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.ports import free_port
from harness.postgres import PgCluster, wait_for
from tests.integration.plugin_capture import install_wrappers, last_capture, read_captures

NAGIOS = Path(os.environ.get("NAGIOS_BIN", "/usr/sbin/nagios4"))
COMMANDS = Path(__file__).resolve().parents[2] / "contrib" / "nagios" / "pg-ha-checks.cfg"

# (host, service description, check_command with its $ARG1$)
SERVICES = [
    ("primary", "pg alive", "pg_ha_alive"),
    ("primary", "pg role", "pg_ha_role!--expect primary"),
    ("primary", "pg standbys", "pg_ha_standbys!--min-standbys 1 --standby replica1"),
    ("primary", "pg slots", "pg_ha_slots!--slot replica1 -w 1GB -c 8GB"),
    ("primary", "pg connections", "pg_ha_connections!-w 80% -c 90%"),
    ("primary", "pg archiver", "pg_ha_archiver"),
    ("primary", "pg wraparound", "pg_ha_wraparound!-w 50% -c 75%"),
    ("primary", "pg transactions", "pg_ha_transactions!-w 30min --idle-warning 5min"),
    ("primary", "memory", "pg_ha_mem!-w 99% -c 100%"),
    ("replica", "pg lag", "pg_ha_lag!-w 16MB -c 1GB"),
    ("replica", "pg role replica", "pg_ha_role!--expect replica"),
]

# An IPv6-only host: Nagios hands its address to the plugin as it is, and the Consul
# address comes from the host's _CONSUL_ADDR (an IPv6 $HOSTADDRESS$ cannot carry a port).
# Nothing listens on ::1 in the fixtures: these assert the command line Nagios ran.
IPV6_HOST = "replica6"
IPV6_SERVICES = [
    (IPV6_HOST, "pg lag v6", "pg_ha_lag!-w 16MB -c 1GB"),
    (IPV6_HOST, "pg consul role v6", "pg_ha_consul_role!--service-id pg-db"),
]

MAIN_CFG = """\
log_file={d}/nagios.log
cfg_file={commands}
cfg_file={d}/objects.cfg
resource_file={d}/resource.cfg
status_file={d}/status.dat
status_update_interval=1
lock_file={d}/nagios.lock
temp_file={d}/nagios.tmp
temp_path={d}
check_result_path={d}/checkresults
object_cache_file={d}/objects.cache
precached_object_file={d}/objects.precache
state_retention_file={d}/retention.dat
retain_state_information=0
command_file={d}/nagios.cmd
check_external_commands=1
command_check_interval=-1
# the interpreter behind our console scripts may live under a 0700 home; tests only
nagios_user=root
nagios_group=root
enable_notifications=0
interval_length=1
max_service_check_spread=1
max_host_check_spread=1
check_result_reaper_frequency=1
illegal_macro_output_chars=`~$&|'"<>
"""

OBJECTS_HEAD = """\
define timeperiod {
    timeperiod_name 24x7
    alias           always
    monday          00:00-24:00
    tuesday         00:00-24:00
    wednesday       00:00-24:00
    thursday        00:00-24:00
    friday          00:00-24:00
    saturday        00:00-24:00
    sunday          00:00-24:00
}
define command {
    command_name    notify_nobody
    command_line    /bin/true
}
define contact {
    contact_name                    nobody
    host_notifications_enabled      0
    service_notifications_enabled   0
    host_notification_period        24x7
    service_notification_period     24x7
    host_notification_options       n
    service_notification_options    n
    host_notification_commands      notify_nobody
    service_notification_commands   notify_nobody
}
"""


@dataclass
class NagiosRun:
    status: dict[tuple[str, str], dict[str, str]]
    captures: Path
    ports: dict[str, int]


def parse_status(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """servicestatus blocks of status.dat, by (host_name, service_description)."""
    services = {}
    for block in re.findall(r"servicestatus \{\n(.*?)\n\s*\}", text, re.S):
        fields = dict(line.strip().split("=", 1) for line in block.splitlines() if "=" in line)
        services[fields["host_name"], fields["service_description"]] = fields
    return services


@pytest.fixture(scope="module")
def nagios(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NagiosRun]:
    """One Nagios run per PostgreSQL major that checks every service once."""
    if not NAGIOS.exists():
        pytest.fail(f"{NAGIOS} missing: scripts/bootstrap installs nagios4-core", pytrace=False)
    pg_cluster.wait_streaming()
    d = tmp_path_factory.mktemp("nagios")
    (d / "checkresults").mkdir()
    plugins, captures = d / "plugins", d / "captures"
    install_wrappers(plugins, captures)
    (d / "nagios.cfg").write_text(MAIN_CFG.format(d=d, commands=COMMANDS))
    (d / "resource.cfg").write_text(f"$USER1$={plugins}\n")
    ports = {"primary": pg_cluster.primary.port, "replica": pg_cluster.replicas[0].port}
    objects = [OBJECTS_HEAD]
    for host in ports:
        objects.append(
            f"define host {{\n    host_name {host}\n    address 127.0.0.1\n"
            "    max_check_attempts 1\n    check_period 24x7\n    contacts nobody\n}\n"
        )
    # a port of its own, so these runs never pass for the 127.0.0.1 host's
    ports[IPV6_HOST] = free_port()
    objects.append(
        f"define host {{\n    host_name {IPV6_HOST}\n    address ::1\n"
        "    _CONSUL_ADDR [::1]:8500\n"
        "    max_check_attempts 1\n    check_period 24x7\n    contacts nobody\n}\n"
    )
    for host, description, check_command in SERVICES + IPV6_SERVICES:
        objects.append(
            "define service {\n    use pg-ha-service\n"
            f"    host_name {host}\n    service_description {description}\n"
            f"    check_command {check_command}\n    check_period 24x7\n"
            # run once, by the forced check below: one capture per service
            "    active_checks_enabled 0\n"
            "    notification_period 24x7\n    contacts nobody\n"
            f"    _PG_PORT {ports[host]}\n}}\n"
        )
    (d / "objects.cfg").write_text("".join(objects))
    verify = subprocess.run(
        [str(NAGIOS), "-v", str(d / "nagios.cfg")], capture_output=True, text=True, timeout=30
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "Total Errors:   0" in verify.stdout

    # libpq in the checks finds the monitor role's password through the daemon's env
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSFILE"] = str(pg_cluster.passfile)
    daemon = subprocess.Popen(
        [str(NAGIOS), str(d / "nagios.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=d,
    )
    try:
        command_file = d / "nagios.cmd"
        wait_for(command_file.exists, what="nagios.cmd", timeout=30)
        now = int(time.time())
        with command_file.open("w") as pipe:
            for host in ports:  # IPV6_HOST included
                pipe.write(f"[{now}] SCHEDULE_FORCED_HOST_SVC_CHECKS;{host};{now}\n")

        def all_checked() -> dict | None:
            status_file = d / "status.dat"
            if not status_file.exists():
                return None
            status = parse_status(status_file.read_text())
            done = all(
                status.get((h, s), {}).get("has_been_checked") == "1"
                for h, s, _ in SERVICES + IPV6_SERVICES
            )
            return status if done else None

        status = wait_for(all_checked, what="Nagios to check every service", timeout=90)
        yield NagiosRun(status, captures, ports)
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize(("host", "description", "check_command"), SERVICES)
def test_status_dat_holds_exactly_what_the_plugin_printed(
    nagios: NagiosRun, host: str, description: str, check_command: str
) -> None:
    fields = nagios.status[host, description]
    subcommand = check_command.split("!")[0].removeprefix("pg_ha_")
    if subcommand == "mem":
        run = last_capture(nagios.captures, "-w", "99%")
    else:
        run = last_capture(nagios.captures, subcommand, str(nagios.ports[host]))
        extra = check_command.split("!")[1].split() if "!" in check_command else []
        assert run.args == [
            subcommand,
            "-H",
            "127.0.0.1",
            "-p",
            str(nagios.ports[host]),
            "-U",
            "monitor",
            "-d",
            "postgres",
            "-t",
            "10",
            *extra,
        ]
    assert run.stderr == ""
    assert fields["current_state"] == str(run.code)
    assert len([c for c in read_captures(nagios.captures) if c.args == run.args]) == 1
    # Nagios rewrites ";" as ":" in the first line (checks.c replace_semicolons;
    # NagiosEnterprises/nagioscore#652, "won't fix"): the contract never prints one there,
    # so what Nagios shows is exactly what the plugin printed
    assert ";" not in run.stdout.split(" | ")[0]
    assert fields["plugin_output"] == run.output
    assert fields["performance_data"] == run.perfdata
    # status.dat escapes newlines in the long output
    assert fields["long_plugin_output"] == "\\n".join(run.long_output)
    # the daemon's environment reached libpq: the check logged in
    assert "cannot connect" not in run.output
    assert fields["current_state"] in ("0", "1"), fields["plugin_output"]


@pytest.mark.parametrize(("host", "description", "check_command"), IPV6_SERVICES)
def test_ipv6_only_host_gets_its_address(
    nagios: NagiosRun, host: str, description: str, check_command: str
) -> None:
    subcommand, extra = check_command.removeprefix("pg_ha_").replace("_", "-").split("!")
    runs = [
        r
        for r in read_captures(nagios.captures)
        if r.args[:1] == [subcommand] and r.args[1:3] == ["-H", "::1"]
    ]
    assert len(runs) == 1, [r.args for r in read_captures(nagios.captures)]
    consul = ["--consul-addr", "[::1]:8500"] if subcommand == "consul-role" else []
    assert runs[0].args == [
        subcommand,
        "-H",
        "::1",
        "-p",
        str(nagios.ports[host]),
        "-U",
        "monitor",
        "-d",
        "postgres",
        "-t",
        "10",
        *consul,
        *extra.split(),
    ]
    assert nagios.status[host, description]["current_state"] == str(runs[0].code)
