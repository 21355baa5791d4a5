"""mem_check run as Consul runs it: the real executable, on this host's real memory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness.consul import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 1024**2


def command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "mem_check")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "checks.mem_check"]


def mem_check(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [*command(), *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.stderr == "", "nothing may reach stderr (Consul mixes it into the output)"
    return result.returncode, result.stdout


def perfdata(output: str) -> dict[str, float]:
    _, _, data = output.splitlines()[0].partition(" | ")
    values = {}
    for item in data.split():
        label, _, rest = item.partition("=")
        values[label] = float(re.match(r"^-?[\d.]+", rest).group(0))
    return values


def meminfo() -> dict[str, int]:
    values = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            parts = rest.split()
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def test_real_numbers_agree_with_proc_meminfo() -> None:
    before = meminfo()
    code, out = mem_check("--scope", "host")
    after = meminfo()
    assert code == 0, out
    data = perfdata(out)
    pool = before.get("Hugetlb", before["HugePages_Total"] * before["Hugepagesize"])
    total = before["MemTotal"] - pool
    assert data["total_bytes"] == total
    low, high = sorted((before["MemAvailable"], after["MemAvailable"]))
    slack = 64 * MiB  # memory moves while three processes start and stop
    assert low - slack <= data["available_bytes"] <= high + slack
    expected_percent = 100 * (total - data["available_bytes"]) / total
    assert abs(data["used_percent"] - expected_percent) <= 0.06  # one decimal of rounding
    assert data["swap_total_bytes"] == before["SwapTotal"]
    assert data["commit_limit_bytes"] == before["CommitLimit"]
    assert out.startswith("MEM OK - ")
    assert "(host) | used_percent=" in out.splitlines()[0]


def test_exit_codes_follow_thresholds_around_the_real_value() -> None:
    _, out = mem_check()
    used = perfdata(out)["used_percent"]
    assert used > 0.2, "the thresholds below need some memory in use"
    below = f"{used / 2:.1f}%"
    code, out = mem_check("-w", below)
    assert code == 1
    # other processes on the host move the value a little between runs: not the text
    match = re.match(
        rf"MEM WARNING - used ([\d.]+%) \(above {re.escape(below)}\), "
        r"[\d.]+ \S+ available of [\d.]+ \S+ \(\w+\) \|",
        out,
    )
    assert match, out
    # the used percentage is said once, not again in the headline (was "68.3% ... 68.3%")
    assert out.split(" | ")[0].count(match[1]) == 1, out
    assert mem_check("-w", below, "-c", below)[0] == 2
    assert mem_check("-w", f"{min(used * 2 + 5, 99):.1f}")[0] == 0
    if used > 1.5:
        assert mem_check("-w", "1%")[0] == 1
    assert mem_check("--available-warning", "100TiB")[0] == 1


@pytest.mark.parametrize(
    "args", [["--bogus"], ["-w", "12parsecs"], ["--scope", "nowhere"], ["--top", "x"]]
)
def test_usage_errors_are_unknown_on_stdout(args: list[str]) -> None:
    code, out = mem_check(*args)
    assert code == 3
    assert out.startswith("MEM UNKNOWN - ")
    assert out.count("\n") == 1


def test_help_and_version() -> None:
    code, out = mem_check("--help")
    assert code == 0
    assert "--scope" in out
    assert "--root" not in out  # a test hook, not for users
    code, out = mem_check("-V")
    assert (code, "pg-ha-checks" in out) == (0, True)


def test_top_lists_the_largest_processes() -> None:
    code, out = mem_check("--top", "3")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("top ")]
    assert len(lines) == 3
    assert all(re.match(r"^top \d: [\d.]+ \S+ (pss|rss) pid \d+ ", line) for line in lines)


def test_psutil_is_imported_only_for_top() -> None:
    def imported(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "checks.mem_check", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        return result.stderr

    assert not re.search(r"\|\s+psutil$", imported(), re.M)
    assert re.search(r"\|\s+psutil$", imported("--top", "1"), re.M)


# -- a real cgroup with a real limit ---------------------------------------------------


def _memory_controller() -> tuple[str, int] | None:
    """(mount point, cgroup version) of the real memory controller, checked by fs type:
    /sys/fs/cgroup may be a tmpfs where mkdir makes a plain directory (docs/design.md §4)."""
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields, _, tail = line.partition(" - ")
            fs_type, _, rest = tail.partition(" ")
            options = rest.split()[1].split(",") if len(rest.split()) > 1 else []
            if fs_type == "cgroup" and "memory" in options:
                return fields.split()[4], 1
            if fs_type == "cgroup2":
                point = fields.split()[4]
                try:
                    with open(f"{point}/cgroup.controllers") as controllers:
                        if "memory" in controllers.read().split():
                            return point, 2
                except OSError:
                    continue
    return None


@pytest.fixture
def limited_cgroup() -> Iterator[tuple[str, str, int]]:
    """A child of this test's own memory cgroup, limited to 128 MiB.

    Nesting under our own cgroup keeps the processes inside whatever limits the machine
    already puts on us, and exercises the tightest-ancestor rule with a real kernel.
    """
    found = _memory_controller()
    if os.geteuid() != 0 or found is None:
        pytest.skip("needs root and a mounted cgroup memory controller")
    mount_point, version = found
    own = ""
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if (version == 1 and "memory" in controllers.split(",")) or (
                version == 2 and controllers == ""
            ):
                own = path
    name = f"pg-ha-checks-mem-{os.getpid()}"
    cgroup_path = f"{own.rstrip('/')}/{name}"
    directory = f"{mount_point}{cgroup_path}"
    try:
        os.mkdir(directory)
        limit_file = "memory.limit_in_bytes" if version == 1 else "memory.max"
        with open(f"{directory}/{limit_file}", "w") as handle:
            handle.write(str(128 * MiB))
    except OSError as exc:
        if os.path.isdir(directory):
            os.rmdir(directory)
        pytest.skip(f"this machine does not let root create a memory cgroup: {exc}")
    try:
        yield cgroup_path, directory, 128 * MiB
    finally:
        for _ in range(50):
            try:
                os.rmdir(directory)
                break
            except OSError:
                time.sleep(0.1)  # the killed process leaves the cgroup asynchronously


def _start_filler(directory: str, size: int) -> subprocess.Popen[str]:
    """A process that joins the cgroup before it runs, then touches ``size`` bytes."""

    def join() -> None:
        with open(f"{directory}/cgroup.procs", "w") as handle:
            handle.write(str(os.getpid()))

    code = (
        "import sys, time\n"
        f"block = bytearray(b'x') * {size}\n"  # written, so every page is charged
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=join,
    )


def test_real_cgroup_limit_and_a_process_that_fills_it(limited_cgroup) -> None:
    cgroup_path, directory, limit = limited_cgroup
    filler = _start_filler(directory, 96 * MiB)
    try:
        assert filler.stdout is not None
        assert filler.stdout.readline().strip() == "ready"
        code, out = mem_check("--cgroup", cgroup_path, "-w", "60%", "-c", "99%")
        data = perfdata(out)
        assert data["total_bytes"] == limit  # auto picked the cgroup: its limit is tighter
        assert f"(cgroup {cgroup_path})" in out.splitlines()[0]
        assert 70 <= data["used_percent"] <= 99, out
        assert code == 1, out
        assert f"limit 128.0 MiB set on {cgroup_path}" in out
        # --top looks inside the cgroup only: the filler is all there is
        _, out = mem_check("--cgroup", cgroup_path, "--top", "5")
        top = [line for line in out.splitlines() if line.startswith("top ")]
        assert len(top) == 1, out
        assert f" pid {filler.pid} python" in top[0]
    finally:
        filler.kill()
        filler.wait()


def test_real_oom_kill_in_a_cgroup_is_counted(limited_cgroup) -> None:
    cgroup_path, directory, _ = limited_cgroup
    if shutil.which("swapon") and meminfo()["SwapTotal"] > 0:
        pytest.skip("with swap the filler may be swapped out instead of OOM-killed")
    _, out = mem_check("--scope", "cgroup", "--cgroup", cgroup_path)
    assert perfdata(out)["oom_kills"] == 0
    filler = _start_filler(directory, 512 * MiB)
    filler.wait(timeout=60)
    assert filler.returncode == -9, "the kernel's OOM killer ends it with SIGKILL"
    code, out = mem_check("--scope", "cgroup", "--cgroup", cgroup_path, "--oom-warning", "0")
    assert perfdata(out)["oom_kills"] == 1
    assert code == 1
    assert "oom kills: 1 in the cgroup" in out


# -- the shipped Consul snippet, loaded into a real agent -----------------------------

SNIPPET = os.path.join(ROOT, "contrib", "consul-conf.d", "mem-check.json")


def _snippet_with(*extra_args: str) -> dict:
    with open(SNIPPET) as handle:
        snippet = json.load(handle)
    check = snippet["service"]["checks"][0]
    assert "script" not in check, "Consul removed 'script' in 1.1: args only"
    assert check["args"][:1] == ["/usr/local/bin/mem_check"]
    check["args"] = [*command(), *check["args"][1:], *extra_args]
    check["interval"] = "1s"  # the test should not wait out the shipped interval
    return snippet


def _seconds(duration: str) -> float:
    return float(duration.rstrip("s"))


def test_snippet_timeout_is_above_the_plugin_timeout() -> None:
    with open(SNIPPET) as handle:
        check = json.load(handle)["service"]["checks"][0]
    args = check["args"]
    plugin_timeout = float(args[args.index("-t") + 1])
    assert _seconds(check["timeout"]) > plugin_timeout
    assert "leader.pg-db" in check["notes"]


PG_DB = {
    "service": {
        "id": "pg-db",
        "name": "pg-db",
        "port": 5432,
        "checks": [{"id": "pg-db-alive", "name": "stand-in", "ttl": "10m", "status": "passing"}],
    }
}


def _wait_for_output(agent, prefix: str) -> dict:
    def answered() -> dict | None:
        check = agent.api("GET", "/v1/agent/checks", timeout=1.0).get("pg-host-memory")
        return check if check and check["Output"].startswith(prefix) else None

    return wait_until(answered, timeout=30, what=f"pg-host-memory output {prefix!r}")


def test_critical_memory_leaves_pg_db_in_dns(consul_agent_factory) -> None:
    """Loaded into a real agent: the memory check runs and, when critical, takes down
    pg-host only; pg-db (what leader.pg-db resolves from) stays passing."""
    agent = consul_agent_factory(
        config_files={
            "mem-check": _snippet_with("--available-critical", "100TiB"),
            "pg-db": PG_DB,
        }
    )
    # a script check starts critical with no output: wait for the plugin's own answer
    check = _wait_for_output(agent, "MEM CRITICAL - ")
    assert check["Status"] == "critical"
    assert check["Output"].startswith("MEM CRITICAL - available ")
    assert check["ServiceID"] == "pg-host"

    def statuses(entries: list[dict]) -> set[str]:
        return {check["Status"] for entry in entries for check in entry["Checks"]}

    # the catalog (what DNS answers from) catches up with the agent by anti-entropy
    host = agent.wait_for_catalog_service("pg-host", lambda e: "critical" in statuses(e))
    assert {c["CheckID"] for c in host[0]["Checks"] if c["Status"] == "critical"} == {
        "pg-host-memory"
    }
    db = agent.wait_for_catalog_service("pg-db", lambda e: statuses(e) == {"passing"})
    assert [entry["Service"]["ID"] for entry in db] == ["pg-db"]
    passing = agent.api("GET", "/v1/health/service/pg-db?passing=true")
    assert [entry["Service"]["ID"] for entry in passing] == ["pg-db"]
    assert agent.api("GET", "/v1/health/service/pg-host?passing=true") == []


def test_snippet_as_shipped_passes_on_this_host(consul_agent_factory) -> None:
    agent = consul_agent_factory(config_files={"mem-check": _snippet_with()})
    check = _wait_for_output(agent, "MEM OK - ")
    assert check["Status"] == "passing"
    assert "| used_percent=" in check["Output"]
