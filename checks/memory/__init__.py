"""What mem_check reads: /proc and the cgroup files, under a root directory.

One module per source (meminfo, cgroup, pressure, overcommit, processes), stdlib only, so
that importing them costs nothing next to click and nagiosplugin (docs/design.md §4). psutil is
imported by :mod:`checks.memory.processes` alone, and only when ``--top`` asks for it.
"""
