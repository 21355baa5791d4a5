"""Memory of one cgroup, v1 or v2, and the tightest limit that applies to it.

Which cgroup is a choice the user makes (``--cgroup``) or, by default, the root of the
cgroup file system this process sees: inside a container that is the container's own
cgroup, on a host it is the root, which has no limit. The check never looks at
/proc/self/cgroup: under Consul that is the Consul agent's cgroup (docs/design.md §4).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from checks.memory.files import read_keyed, read_text, under
from checks.status import unknown

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages: 9223372036854771712 with 4 KiB
# pages, other values with other page sizes; anything this large is no limit.
V1_UNLIMITED = 1 << 62

_ESCAPE = re.compile(r"\\([0-7]{3})")


class Hierarchy(NamedTuple):
    """Where the memory controller is mounted and which cgroup is at the mount point."""

    version: int
    mount_point: str
    mount_root: str


class Limit(NamedTuple):
    bytes: int
    source: str


class CgroupMemory(NamedTuple):
    version: int
    path: str
    usage: int
    inactive_file: int
    limit: Limit | None
    oom_kills: int | None
    pressure_path: str | None
    directory: str

    @property
    def working_set(self) -> int:
        """What the kernel cannot simply drop: inactive page cache goes first under a
        limit, so counting it (as memory.usage does) alarms on a full but healthy cache."""
        return max(self.usage - self.inactive_file, 0)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    if "\\" not in field:
        return field
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def find_hierarchy(root: str) -> Hierarchy | None:
    """The memory controller's mount, from /proc/self/mountinfo (None: no controller)."""
    text = read_text(under(root, "/proc/self/mountinfo")) or ""
    v2: Hierarchy | None = None
    for line in text.splitlines():
        fields, _, tail = line.partition(" - ")
        parts, extra = fields.split(), tail.split()
        if len(parts) < 5 or len(extra) < 3:
            continue
        fs_type, options = extra[0], extra[2].split(",")
        mount_root, mount_point = _unescape(parts[3]), _unescape(parts[4])
        if fs_type == "cgroup" and "memory" in options:
            # a controller lives in one hierarchy only: a v1 memory mount settles it
            return Hierarchy(1, mount_point, mount_root)
        if fs_type == "cgroup2" and v2 is None:
            controllers = read_text(under(root, f"{mount_point}/cgroup.controllers")) or ""
            if "memory" in controllers.split():
                v2 = Hierarchy(2, mount_point, mount_root)
    return v2


def resolve(hierarchy: Hierarchy, path: str | None) -> tuple[str, str]:
    """(directory as the kernel names it, cgroup path to show) for ``--cgroup PATH``.

    PATH is a cgroup path as in /proc/PID/cgroup (``/system.slice/postgresql.service``)
    or a directory under the mount point; None is the cgroup at the mount point.
    """
    mount_point, mount_root = hierarchy.mount_point, hierarchy.mount_root
    if path is None:
        return mount_point, mount_root
    if path == mount_point or path.startswith(mount_point.rstrip("/") + "/"):
        relative = path[len(mount_point) :].strip("/")
    elif mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        # a path as the host names it, seen from inside a container
        relative = path[len(mount_root) :].strip("/")
    else:
        relative = path.strip("/")
    directory = os.path.join(mount_point, relative) if relative else mount_point
    shown = "/" + "/".join(p for p in (mount_root.strip("/"), relative) if p)
    return directory, shown


def _ancestors(hierarchy: Hierarchy, directory: str) -> list[tuple[str, str]]:
    """(directory, cgroup path) from ``directory`` up to the mount point."""
    found: list[tuple[str, str]] = []
    current = directory
    while True:
        relative = current[len(hierarchy.mount_point) :].strip("/")
        shown = "/" + "/".join(p for p in (hierarchy.mount_root.strip("/"), relative) if p)
        found.append((current, shown))
        if relative == "":
            return found
        current = os.path.dirname(current)


def _limit_value(text: str | None, version: int) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if value == "max" or not value.isdigit():
        return None
    number = int(value)
    if version == 1 and number >= V1_UNLIMITED:
        return None
    return number


def tightest_limit(root: str, hierarchy: Hierarchy, directory: str) -> Limit | None:
    """The smallest limit on the cgroup or any ancestor: a child may set a larger limit
    than its parent, and the parent's is the one that reclaims and OOM-kills."""
    name = "memory.max" if hierarchy.version == 2 else "memory.limit_in_bytes"
    limits: list[Limit] = []
    for ancestor, shown in _ancestors(hierarchy, directory):
        value = _limit_value(read_text(under(root, f"{ancestor}/{name}")), hierarchy.version)
        if value is not None:
            limits.append(Limit(value, shown))
    if hierarchy.version == 1:
        # the kernel's own answer also covers ancestors outside a container's view
        stat = read_keyed(under(root, f"{directory}/memory.stat")) or {}
        value = stat.get("hierarchical_memory_limit")
        if value is not None and value < V1_UNLIMITED:
            limits.append(Limit(value, "an ancestor (hierarchical_memory_limit)"))
    # on ties the cgroup nearest the checked one names the limit
    return min(limits, key=lambda limit: limit.bytes, default=None)


def read_cgroup(root: str, hierarchy: Hierarchy, path: str | None) -> CgroupMemory:
    directory, shown = resolve(hierarchy, path)
    if not os.path.isdir(under(root, directory)):
        raise unknown(f"cgroup {shown} not found (no directory {directory})")
    stat = read_keyed(under(root, f"{directory}/memory.stat"))
    if hierarchy.version == 2:
        usage_text = read_text(under(root, f"{directory}/memory.current"))
        inactive = (stat or {}).get("inactive_file", 0)
        events = read_keyed(under(root, f"{directory}/memory.events")) or {}
        oom_kills = events.get("oom_kill")
        pressure: str | None = f"{directory}/memory.pressure"
    else:
        usage_text = read_text(under(root, f"{directory}/memory.usage_in_bytes"))
        # total_* include the descendants, as usage_in_bytes does
        inactive = (stat or {}).get("total_inactive_file", (stat or {}).get("inactive_file", 0))
        control = read_keyed(under(root, f"{directory}/memory.oom_control")) or {}
        oom_kills = control.get("oom_kill")
        pressure = None
    if usage_text is None or not usage_text.strip().isdigit():
        # the v2 root cgroup has no memory.current: the host scope is the answer there
        raise unknown(f"cgroup {shown} has no memory usage file; use --scope host for the host")
    return CgroupMemory(
        version=hierarchy.version,
        path=shown,
        usage=int(usage_text),
        inactive_file=inactive,
        limit=tightest_limit(root, hierarchy, directory),
        oom_kills=oom_kills,
        pressure_path=pressure,
        directory=directory,
    )


def member_pids(root: str, directory: str) -> set[int]:
    """Every process in the cgroup and its descendants (cgroup.procs is per level)."""
    pids: set[int] = set()
    for current, _, _ in os.walk(under(root, directory)):
        text = read_text(os.path.join(current, "cgroup.procs")) or ""
        pids.update(int(line) for line in text.split() if line.isdigit())
    return pids
