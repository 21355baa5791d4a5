"""mem_check end to end on the recorded trees: status, first line, perfdata, long output."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.unit.mem_helpers import copy_tree, perfdata, rewrite, run, tree, value

GiB = 1024**3
FIRST_LINE = re.compile(r"^MEM (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+( \| .+)?$")
PERF_ITEM = re.compile(r"^[a-z][a-z0-9_]*=-?\d+(\.\d+)?(%|B|c|s)?(;[^;]*){0,4}$")


def test_v1_host_without_limit_is_measured_as_the_host(capsys) -> None:
    code, out = run(capsys, "--root", tree("v1-host"))
    assert code == 0
    assert out.startswith("MEM OK - 37.5% used, 10.0 GiB available of 16.0 GiB (host) | ")
    data = perfdata(out)
    assert data["used_percent"] == "37.5%;90;95;0;100"
    assert data["total_bytes"] == f"{16 * GiB}B;;;0"
    assert data["oom_kills"] == "2c;;;0"
    assert "no memory limit below the host's" in out


def test_every_perfdata_item_follows_the_contract(capsys) -> None:
    for name in ("v1-host", "v2-container", "overcommit-2", "hugepages", "no-psi-no-swap"):
        _, out = run(capsys, "--root", tree(name))
        first = out.splitlines()[0]
        assert FIRST_LINE.match(first), first
        assert len(first.partition(" | ")[0]) < 120
        assert len(out.encode()) < 4096
        for label, text in perfdata(out).items():
            assert PERF_ITEM.match(f"{label}={text}"), (name, label, text)
            if text.split(";")[0].endswith(("B", "c")):
                assert re.match(r"^\d+[Bc]$", text.split(";")[0]), "bytes and counts are integers"
        assert out.splitlines()[0].split(" | ")[1].startswith("used_percent=")


def test_perfdata_and_verbose_lines_keep_their_orders(capsys) -> None:
    """Perfdata headline first, the hugetlb pool last; -v lists the pool after the total,
    as mem_check always has (graphers may map perfdata by position)."""
    _, out = run(capsys, "--root", tree("hugepages"), "-v")
    labels = list(perfdata(out))
    assert labels[:4] == ["used_percent", "used_bytes", "available_bytes", "total_bytes"]
    assert labels[-1] == "hugetlb_bytes"
    verbose = [line for line in out.splitlines() if line.startswith("ok: ")]
    assert verbose[3:5] == [f"ok: total_bytes {48 * GiB}B", f"ok: hugetlb_bytes {16 * GiB}B"]


def test_forced_cgroup_scope_without_limit_says_so(capsys) -> None:
    code, out = run(capsys, "--root", tree("v1-host"), "--scope", "cgroup")
    assert code == 0
    # working set 7 - 2 GiB of the host's 16 GiB, since nothing limits the root cgroup
    assert "31.2% used, 11.0 GiB available of 16.0 GiB (cgroup /, no limit)" in out


def test_own_cgroup_never_chooses_the_scope(capsys, tmp_path) -> None:
    """Under Consul, /proc/self/cgroup is the agent's: a limit there says nothing of the host."""
    root = copy_tree("v1-host", str(tmp_path))
    (tmp_path / "v1-host/proc/self/cgroup").write_text("4:memory:/machine/pg\n0::/\n")
    code, out = run(capsys, "--root", root)
    assert code == 0
    assert "(host)" in out.splitlines()[0]


def test_nested_v1_limit_makes_auto_pick_the_cgroup(capsys) -> None:
    code, out = run(capsys, "--root", tree("v1-host"), "--cgroup", "/machine/pg")
    assert code == 0
    # working set 800 - 32 MiB against the 1 GiB limit of /machine, not the child's 3 GiB
    assert "75.0% used, 256.0 MiB available of 1.0 GiB (cgroup /machine/pg)" in out
    assert "limit 1.0 GiB set on /machine" in out
    assert perfdata(out)["oom_kills"] == "1c;;;0"


def test_v1_container_auto_and_forced_host(capsys) -> None:
    code, out = run(capsys, "--root", tree("v1-container"))
    assert code == 0
    assert "50.0% used, 1.0 GiB available of 2.0 GiB (cgroup /docker/0123abcd)" in out
    code, out = run(capsys, "--root", tree("v1-container"), "--scope", "host")
    assert "25.0% used, 12.0 GiB available of 16.0 GiB (host)" in out
    assert "cgroup: not used (--scope host)" in out


def test_v2_host_service_limit_and_cgroup_pressure(capsys) -> None:
    args = ("--root", tree("v2-host"), "--cgroup", "/system.slice/postgresql.service")
    code, out = run(capsys, *args)
    assert code == 0
    assert "62.5% used, 1.5 GiB available of 4.0 GiB" in out
    assert value(out, "pressure_some_avg60") == 8.25
    assert perfdata(out)["oom_kills"] == "1c;;;0"
    code, out = run(capsys, *args, "--pressure-warning", "5", "--pressure-critical", "10")
    assert code == 1
    assert out.startswith("MEM WARNING - memory pressure (some avg60) 8.2% (above 5.0%)")
    assert perfdata(out)["pressure_some_avg60"] == "8.25%;5;10;0;100"


def test_v2_host_auto_is_the_host_and_forced_cgroup_root_is_unknown(capsys) -> None:
    code, out = run(capsys, "--root", tree("v2-host"))
    assert (code, "(host)" in out.splitlines()[0]) == (0, True)
    code, out = run(capsys, "--root", tree("v2-host"), "--scope", "cgroup")
    assert code == 3
    assert out.startswith("MEM UNKNOWN - cgroup / has no memory usage file")


def test_v2_container_thresholds(capsys) -> None:
    root = tree("v2-container")
    assert run(capsys, "--root", root)[0] == 0
    code, out = run(capsys, "--root", root, "-w", "75")
    assert code == 1
    # the percentage once: the headline goes on with what the problem did not say
    first = out.split(" | ")[0]
    assert first.startswith("MEM WARNING - used 78.1% (above 75.0%), ")
    assert first.count("78.1%") == 1 and " available of " in first
    code, out = run(capsys, "--root", root, "-w", "50%", "-c", "70%")
    assert code == 2
    assert perfdata(out)["used_percent"] == "78.1%;50;70;0;100"


def test_byte_thresholds_and_available_floor(capsys) -> None:
    root = tree("v1-host")
    code, out = run(capsys, "--root", root, "-w", "5GiB")
    assert code == 1
    assert "used 6.0 GiB (above 5.0 GiB)" in out
    assert perfdata(out)["used_bytes"].split(";")[1] == str(5 * GiB)
    assert perfdata(out)["used_percent"] == "37.5%;90;95;0;100"  # default kept
    code, out = run(capsys, "--root", root, "--available-critical", "12GiB")
    assert code == 2
    assert "available 10.0 GiB (below 12.0 GiB)" in out
    assert perfdata(out)["available_bytes"].split(";")[2] == f"{12 * GiB}:"
    assert run(capsys, "--root", root, "--available-warning", "8GiB")[0] == 0


def test_swap_thresholds_in_percent_or_bytes(capsys) -> None:
    root = tree("v2-host")
    assert run(capsys, "--root", root, "--swap-warning", "20")[0] == 1
    code, out = run(capsys, "--root", root, "--swap-critical", "512MiB")
    assert code == 2
    assert "swap used 1.0 GiB (above 512.0 MiB)" in out


def test_no_psi_no_swap_no_oom_counter(capsys) -> None:
    root = tree("no-psi-no-swap")
    code, out = run(capsys, "--root", root)
    assert code == 0
    data = perfdata(out)
    assert "pressure_some_avg60" not in data
    assert "oom_kills" not in data
    assert data["swap_used_bytes"] == "0B;;;0;0"
    assert "swap: none configured" in out
    assert "pressure: not available" in out


def test_threshold_on_a_missing_dimension_is_unknown_but_critical_wins(capsys) -> None:
    root = tree("no-psi-no-swap")
    code, out = run(capsys, "--root", root, "--pressure-warning", "10")
    assert code == 3
    assert "memory pressure (some avg60) not available on this kernel" in out
    code, out = run(capsys, "--root", root, "--oom-critical", "0", "-c", "10")
    assert code == 2  # CRITICAL > UNKNOWN (docs/design.md §2)


def test_no_controller_with_cgroup_scope_is_unknown(capsys) -> None:
    code, out = run(capsys, "--root", tree("no-psi-no-swap"), "--scope", "cgroup")
    assert code == 3
    assert out.startswith("MEM UNKNOWN - no cgroup memory controller")


def test_overcommit_2_thresholds_commit_charge_by_default(capsys) -> None:
    root = tree("overcommit-2")
    code, out = run(capsys, "--root", root)
    assert code == 1
    assert out.startswith("MEM WARNING - commit charge 93.8% (above 90.0%)")
    assert perfdata(out)["commit_percent"] == "93.8%;90;95;0"
    assert "vm.overcommit_memory=2 (strict), overcommit_ratio=90" in out
    assert run(capsys, "--root", root, "--commit-critical", "93%")[0] == 2
    assert (
        run(capsys, "--root", root, "--commit-warning", "99%", "--commit-critical", "99.5")[0] == 0
    )
    code, out = run(capsys, "--root", root, "--commit-critical", "14GiB")
    assert code == 2
    assert "commit charge 15.0 GiB (above 14.0 GiB)" in out


def test_overcommit_0_never_thresholds_commit_charge(capsys, tmp_path) -> None:
    root = copy_tree("overcommit-2", str(tmp_path))
    rewrite(f"{root}/proc/sys/vm/overcommit_memory", "2", "0")
    code, out = run(capsys, "--root", root, "--commit-critical", "50%")
    assert code == 0
    assert perfdata(out)["commit_percent"] == "93.8%;;;0"
    assert "not enforced so not thresholded" in out


def test_hugepages_pool_is_not_counted_as_used(capsys) -> None:
    code, out = run(capsys, "--root", tree("hugepages"))
    assert code == 0
    assert "16.7% used, 40.0 GiB available of 48.0 GiB (host)" in out
    assert perfdata(out)["hugetlb_bytes"] == f"{16 * GiB}B;;;0"
    assert "hugetlb: pool 16.0 GiB excluded from the total" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "3s"], "percent (90%) or bytes (16MB)"),
        (["--scope", "bogus"], "'bogus' is not one of"),
        (["--scope", "host", "--cgroup", "/x"], "--cgroup measures a cgroup"),
        (["--pressure-warning", "5GiB"], "must be in percent"),
        (["--swap-warning", "3s"], "--swap-warning"),
        (["--top", "-1"], "--top"),
        (["-w", "1:2:3"], "at most one ':'"),
    ],
)
def test_usage_errors_are_unknown(capsys, args, message) -> None:
    code, out = run(capsys, "--root", tree("v1-host"), *args)
    assert code == 3
    assert out.startswith("MEM UNKNOWN - ")
    assert message in out
    assert len(out.splitlines()) == 1


def test_verbose_lists_every_result(capsys) -> None:
    _, out = run(capsys, "--root", tree("v1-host"), "-v")
    assert "ok: used 37.5%" in out
    assert "ok: total_bytes 17179869184B" in out


def test_import_stays_light() -> None:
    """Consul runs this every few seconds: psutil and psycopg only on the paths needing them."""
    code = (
        "import sys, checks.mem_check; "
        "print(sorted(m for m in ('psutil', 'psycopg') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result
