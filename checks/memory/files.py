"""Reading small kernel files under a root directory (``/`` on a real host, a recorded
tree in the unit tests)."""

from __future__ import annotations

import errno
import os

from checks.status import unknown


def under(root: str, path: str) -> str:
    """``path`` (absolute, as the kernel names it) inside ``root``."""
    return os.path.join(root, path.lstrip("/"))


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist (a kernel without the feature).

    Any other error (permission, EIO) is a real problem and ends the check as UNKNOWN
    with the path, rather than passing for "not there".
    """
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        # PSI files exist but refuse reads with EOPNOTSUPP when booted with psi=0
        if exc.errno == errno.EOPNOTSUPP:
            return None
        raise unknown(f"cannot read {path}: {exc.strerror or exc}") from None


def read_keyed(path: str) -> dict[str, int] | None:
    """``key value`` lines (memory.stat, /proc/vmstat, memory.events) as a dict."""
    text = read_text(path)
    if text is None:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values
