from __future__ import annotations

import pytest

from checks.memory.meminfo import parse_meminfo, read_host_memory, read_paging
from checks.status import CheckFailed, Status
from tests.unit.mem_helpers import copy_tree, rewrite, tree

GiB = 1024**3


def test_parse_scales_kb_and_keeps_page_counts() -> None:
    info = parse_meminfo("MemTotal:  1024 kB\nHugePages_Total:   12\nHugepagesize: 2048 kB\n")
    assert info == {"MemTotal": 1024 * 1024, "HugePages_Total": 12, "Hugepagesize": 2 * 1024**2}


def test_total_excludes_the_hugetlb_pool() -> None:
    host = read_host_memory(tree("hugepages"))
    assert host.mem_total == 64 * GiB
    assert host.hugetlb_pool == 16 * GiB
    assert host.total == 48 * GiB
    assert host.used == 8 * GiB  # 37.5% of MemTotal, but 16.7% of what is allocatable
    assert (host.hugepages_free, host.hugepages_reserved) == (2048, 1024)


def test_pool_from_page_count_when_kernel_lacks_the_hugetlb_line(tmp_path) -> None:
    root = copy_tree("no-psi-no-swap", str(tmp_path))
    path = f"{root}/proc/meminfo"
    rewrite(path, "HugePages_Total:       0", "HugePages_Total:     512")
    assert read_host_memory(root).hugetlb_pool == 512 * 2 * 1024**2


def test_missing_memavailable_is_unknown_not_a_guess(tmp_path) -> None:
    root = copy_tree("no-psi-no-swap", str(tmp_path))
    path = f"{root}/proc/meminfo"
    rewrite(path, "MemAvailable:", "MemAvailableNot:")
    with pytest.raises(CheckFailed) as failure:
        read_host_memory(root)
    assert failure.value.status is Status.UNKNOWN
    assert "MemAvailable" in failure.value.message


def test_missing_meminfo_is_unknown(tmp_path) -> None:
    with pytest.raises(CheckFailed) as failure:
        read_host_memory(str(tmp_path))
    assert failure.value.status is Status.UNKNOWN


def test_swap_counters_are_bytes_and_oom_counter_may_be_missing() -> None:
    paging = read_paging(tree("v2-host"))
    assert paging.swap_in_bytes == 1000 * 4096
    assert paging.swap_out_bytes == 2000 * 4096
    assert paging.oom_kills == 4
    assert read_paging(tree("no-psi-no-swap")).oom_kills is None
