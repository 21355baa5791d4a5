"""Resident mode: the reporter daemon answers over HTTP on its kept connections.

Patroni-compatible health endpoints for load balancers (``health.py``), every check
in-process (``check_endpoint.py``, bounded by ``checks.py``), served by ``server.py``;
the same checks pushed into Consul TTL checks on the daemon's schedule (``push.py``).
"""
