from __future__ import annotations

import pytest

from checks.memory.cgroup import (
    Hierarchy,
    find_hierarchy,
    member_pids,
    read_cgroup,
    resolve,
    tightest_limit,
)
from checks.status import CheckFailed
from tests.unit.mem_helpers import copy_tree, rewrite, tree

GiB, MiB = 1024**3, 1024**2
V1_HOST = Hierarchy(1, "/sys/fs/cgroup/memory", "/")


def test_v1_memory_mount_wins_over_a_v2_mount_without_the_controller() -> None:
    assert find_hierarchy(tree("v1-host")) == V1_HOST


def test_v1_container_mount_root_is_its_own_cgroup() -> None:
    assert find_hierarchy(tree("v1-container")) == Hierarchy(
        1, "/sys/fs/cgroup/memory", "/docker/0123abcd"
    )


def test_v2_needs_memory_in_cgroup_controllers() -> None:
    assert find_hierarchy(tree("v2-host")) == Hierarchy(2, "/sys/fs/cgroup", "/")
    assert find_hierarchy(tree("no-psi-no-swap")) is None


def test_mount_point_escapes_are_decoded(tmp_path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        "35 31 0:32 / /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory\n"
    )
    assert find_hierarchy(str(tmp_path)) == Hierarchy(1, "/sys/fs/cgroup/mem ory", "/")


@pytest.mark.parametrize(
    ("path", "directory", "shown"),
    [
        (None, "/sys/fs/cgroup/memory", "/"),
        ("/machine/pg", "/sys/fs/cgroup/memory/machine/pg", "/machine/pg"),
        ("machine/pg/", "/sys/fs/cgroup/memory/machine/pg", "/machine/pg"),
        ("/sys/fs/cgroup/memory/machine", "/sys/fs/cgroup/memory/machine", "/machine"),
    ],
)
def test_resolve_accepts_cgroup_paths_and_directories(path, directory, shown) -> None:
    assert resolve(V1_HOST, path) == (directory, shown)


def test_resolve_strips_the_host_prefix_inside_a_container() -> None:
    hierarchy = Hierarchy(1, "/sys/fs/cgroup/memory", "/docker/abc")
    assert resolve(hierarchy, "/docker/abc/sub") == ("/sys/fs/cgroup/memory/sub", "/docker/abc/sub")


def test_v1_no_limit_value_means_no_limit() -> None:
    assert tightest_limit(tree("v1-host"), V1_HOST, "/sys/fs/cgroup/memory") is None


def test_v1_tightest_ancestor_wins() -> None:
    limit = tightest_limit(tree("v1-host"), V1_HOST, "/sys/fs/cgroup/memory/machine/pg")
    assert limit is not None
    assert (limit.bytes, limit.source) == (1 * GiB, "/machine")


def test_v1_hierarchical_limit_covers_ancestors_outside_the_container(tmp_path) -> None:
    root = copy_tree("v1-container", str(tmp_path))
    stat = f"{root}/sys/fs/cgroup/memory/memory.stat"
    rewrite(stat, f"hierarchical_memory_limit {2 * GiB}", f"hierarchical_memory_limit {GiB}")
    cgroup = read_cgroup(root, find_hierarchy(root), None)
    assert cgroup.limit is not None
    assert cgroup.limit.bytes == GiB
    assert "hierarchical_memory_limit" in cgroup.limit.source


def test_v2_tightest_ancestor_wins_and_max_is_no_limit() -> None:
    root = tree("v2-host")
    hierarchy = find_hierarchy(root)
    cgroup = read_cgroup(root, hierarchy, "/system.slice/postgresql.service")
    assert cgroup.limit is not None
    assert (cgroup.limit.bytes, cgroup.limit.source) == (4 * GiB, "/system.slice")
    assert read_cgroup(root, hierarchy, "/user.slice").limit is None


def test_working_set_leaves_out_inactive_file_cache() -> None:
    root = tree("v2-host")
    cgroup = read_cgroup(root, find_hierarchy(root), "/system.slice/postgresql.service")
    assert (cgroup.usage, cgroup.inactive_file) == (3 * GiB, GiB // 2)
    assert cgroup.working_set == 3 * GiB - GiB // 2
    assert cgroup.oom_kills == 1
    assert cgroup.pressure_path == "/sys/fs/cgroup/system.slice/postgresql.service/memory.pressure"


def test_v1_reads_the_hierarchical_inactive_file_and_oom_control() -> None:
    root = tree("v1-container")
    cgroup = read_cgroup(root, find_hierarchy(root), None)
    assert cgroup.working_set == 1536 * MiB - 512 * MiB
    assert cgroup.oom_kills == 3
    assert cgroup.path == "/docker/0123abcd"


def test_v2_root_has_no_usage_file() -> None:
    root = tree("v2-host")
    with pytest.raises(CheckFailed, match="--scope host"):
        read_cgroup(root, find_hierarchy(root), None)


def test_unknown_cgroup_is_named() -> None:
    root = tree("v1-host")
    with pytest.raises(CheckFailed, match="cgroup /nope not found"):
        read_cgroup(root, find_hierarchy(root), "/nope")


def test_member_pids_include_descendant_cgroups() -> None:
    root = tree("v2-host")
    cgroup = read_cgroup(root, find_hierarchy(root), "/system.slice/postgresql.service")
    assert member_pids(root, cgroup.directory) == {1234, 1240, 1250}
