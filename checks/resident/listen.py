"""``--listen ADDR``: where the daemon's HTTP endpoints listen.

``PORT`` (on 127.0.0.1), ``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:///path``. Loopback by
default: the endpoints say which instance is the primary and run checks on request, which
is nothing to offer the whole network unasked.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

DEFAULT_HOST = "127.0.0.1"
UNIX_PREFIX = "unix://"


@dataclass(frozen=True)
class ListenAddress:
    family: socket.AddressFamily
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"{UNIX_PREFIX}{self.path}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """Raises ValueError saying what is wrong with ``text``."""
    text = text.strip()
    if text.startswith(UNIX_PREFIX):
        path = text[len(UNIX_PREFIX) :]
        if not path.startswith("/"):
            raise ValueError(f"{text!r}: a unix socket needs an absolute path (unix:///run/x.sock)")
        return ListenAddress(socket.AF_UNIX, path=path)
    host, colon, port_text = text.rpartition(":")
    if not colon:
        host, port_text = DEFAULT_HOST, text
    family = socket.AF_INET
    if host.startswith("[") and host.endswith("]"):
        host, family = host[1:-1], socket.AF_INET6
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:8008")
    if not host:
        raise ValueError(f"{text!r}: no host before the port (e.g. 127.0.0.1:8008)")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return ListenAddress(family, host=host, port=int(port_text))


def _convert(ctx: click.Context, param: click.Parameter, value: str | None) -> ListenAddress | None:
    if value is None:
        return None
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


LISTEN_HELP = (
    "Serve the HTTP endpoints (Patroni-compatible health checks, /check/...) on ADDR: "
    "PORT (on 127.0.0.1), HOST:PORT, [IPv6]:PORT or unix:///path."
)


def listen_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--listen ADDR``; the command receives ``listen``: a ListenAddress or None."""
    return click.option("--listen", metavar="ADDR", callback=_convert, help=LISTEN_HELP)(command)
