"""The role reporter's pieces: pure decisions (reconcile, guard, backoff) and the loop.

The CLI is checks/role_reporter.py; it wires these to PostgreSQL and the Consul agent.
"""
