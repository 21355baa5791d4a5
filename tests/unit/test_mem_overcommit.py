from __future__ import annotations

from checks.memory.overcommit import read_overcommit
from tests.unit.mem_helpers import tree


def test_overcommit_modes() -> None:
    strict = read_overcommit(tree("overcommit-2"))
    assert strict.enforced
    assert strict.description == "vm.overcommit_memory=2 (strict), overcommit_ratio=90"
    heuristic = read_overcommit(tree("v1-host"))
    assert not heuristic.enforced
    assert heuristic.description == "vm.overcommit_memory=0 (heuristic)"
    assert read_overcommit("/nonexistent").mode is None
