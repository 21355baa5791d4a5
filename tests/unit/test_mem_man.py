"""man/mem_check.1 lints clean and documents every option mem_check has."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from checks.mem_check import command

PAGE = os.path.join(os.path.dirname(__file__), "..", "..", "man", "mem_check.1")
SECTIONS = (
    "NAME",
    "SYNOPSIS",
    "DESCRIPTION",
    "OPTIONS",
    "EXIT STATUS",
    "ENVIRONMENT",
    "FILES",
    "EXAMPLES",
    "SEE ALSO",
)


def _source() -> str:
    with open(PAGE) as handle:
        return handle.read()


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc not installed")
def test_mandoc_lint_is_clean() -> None:
    result = subprocess.run(["mandoc", "-Tlint", "-Wwarning", PAGE], capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_sections_in_order() -> None:
    headers = re.findall(r'^\.SH "?([A-Z ]+?)"?$', _source(), re.M)
    assert tuple(headers) == SECTIONS


def test_every_click_option_is_documented() -> None:
    # roff writes a literal hyphen as \-
    text = _source().replace("\\-", "-")
    options_section = text.split(".SH OPTIONS", 1)[1].split(".SH EXIT STATUS", 1)[0]
    names = [opt for param in command.params for opt in param.opts if opt.startswith("-")]
    names += ["-h", "--help"]  # click adds the help option at parse time
    missing = [name for name in names if not re.search(rf"{re.escape(name)}\b", options_section)]
    assert missing == []


def test_consul_example_uses_args_not_script() -> None:
    examples = _source().split(".SH EXAMPLES", 1)[1]
    assert '"args"' in examples
    assert '"script"' not in examples
