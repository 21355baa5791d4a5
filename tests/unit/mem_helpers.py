"""Shared by the mem_check unit tests: the recorded trees and a CLI runner."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from checks.mem_check import main

DATA = os.path.join(os.path.dirname(__file__), "data", "mem")


def tree(name: str) -> str:
    return os.path.join(DATA, name)


def copy_tree(name: str, destination: str) -> str:
    """A writable copy, for a scenario that differs from a recorded one in one file."""
    target = os.path.join(destination, name)
    shutil.copytree(tree(name), target)
    return target


def rewrite(path: str, old: str, new: str) -> None:
    """Change one value in a copied tree; fails loudly if the recorded text moved."""
    with open(path) as handle:
        text = handle.read()
    assert old in text, (path, old)
    with open(path, "w") as handle:
        handle.write(text.replace(old, new))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run mem_check in-process; the contract says nothing may reach stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    assert captured.err == ""
    # Nagios rewrites ';' in the first line of output (nagioscore#652)
    assert ";" not in captured.out.split("\n", 1)[0].split(" | ", 1)[0]
    return int(exit_info.value.code or 0), captured.out


def perfdata(output: str) -> dict[str, str]:
    """label -> the whole ``value[uom];warn;crit;min;max`` text."""
    first = output.splitlines()[0]
    _, _, data = first.partition(" | ")
    return dict(item.split("=", 1) for item in data.split())


def value(output: str, label: str) -> float:
    match = re.match(r"^-?[\d.]+", perfdata(output)[label])
    assert match, perfdata(output)[label]
    return float(match.group(0))
