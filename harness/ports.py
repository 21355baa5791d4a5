"""Free loopback ports, chosen by the kernel, for the servers the tests start."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port(*, udp_too: bool = False) -> int:
    """A port free right now on 127.0.0.1 (bind to port 0 and let the kernel choose).

    ``udp_too``: free for UDP as well, as Consul's DNS and serf ports must be.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise OSError("no loopback port free for both TCP and UDP")
