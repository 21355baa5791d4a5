"""pg-ha-checks: Nagios-compatible health checks for PostgreSQL HA behind Consul."""

__version__ = "0.1.0"
