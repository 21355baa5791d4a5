"""contrib/haproxy/haproxy.cfg parses in Debian's haproxy, and the tests' rendering of it
changes addresses only (harness/haproxy.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.haproxy import SHIPPED_CONFIG, Backend, HAProxyError, render

SERVERS = {
    name: Backend("127.0.0.1", 15432 + n, 19100 + n) for n, name in enumerate(("pg1", "pg2", "pg3"))
}
BINDS = {"pg-read-write": 25000, "pg-read-only": 25001}


def haproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.fail("no haproxy: run ./scripts/bootstrap (Debian's haproxy)", pytrace=False)
    return subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )


def test_the_shipped_config_is_valid() -> None:
    done = haproxy_check(SHIPPED_CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rendering_replaces_every_address_and_keeps_every_setting(tmp_path: Path) -> None:
    shipped = SHIPPED_CONFIG.read_text()
    rendered = render(shipped, binds=BINDS, servers=SERVERS, stats_socket=tmp_path / "stats.sock")
    code = "\n".join(line.split("#", 1)[0] for line in rendered.splitlines())
    assert "10.0.0." not in code
    assert "port 8008" not in code
    assert "bind 127.0.0.1:25000" in rendered and "bind 127.0.0.1:25001" in rendered
    assert rendered.count("server pg2 127.0.0.1:15433 check port 19101") == 2
    assert f"stats socket {tmp_path / 'stats.sock'} " in rendered

    def settings(text: str) -> list[str]:
        keep = ("bind", "server", "stats socket")
        lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith(keep)]

    assert settings(rendered) == settings(shipped)
    config = tmp_path / "haproxy.cfg"
    config.write_text(rendered)
    done = haproxy_check(config)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_server_or_bind_the_test_does_not_map_is_refused(tmp_path: Path) -> None:
    shipped = SHIPPED_CONFIG.read_text()
    socket = tmp_path / "stats.sock"
    with pytest.raises(HAProxyError, match="pg3"):
        render(
            shipped,
            binds=BINDS,
            servers={"pg1": SERVERS["pg1"], "pg2": SERVERS["pg2"]},
            stats_socket=socket,
        )
    with pytest.raises(HAProxyError, match="pg-read-only"):
        render(shipped, binds={"pg-read-write": 25000}, servers=SERVERS, stats_socket=socket)
