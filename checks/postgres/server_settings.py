"""Which of our session's settings are the server's, and which are our login's own.

A session's value of a setting comes in layers (``pg_settings.source``): the built-in
default, the server's configuration (postgresql.conf, ALTER SYSTEM, the command line),
then the layers made for one login: ALTER DATABASE ... SET, ALTER ROLE ... SET (also
IN DATABASE), the client's startup options (PGOPTIONS, ``options=`` in a conninfo or
service file) and SET. A conclusion about the server may only rest on the server's layers
(docs/design.md §9); a login layer hides the server's value from a non-superuser.
"""

from __future__ import annotations

# pg_settings.source values of the layers made for one login
LOGIN_SOURCES = frozenset(
    {"database", "user", "database user", "client", "session", "interactive", "test"}
)


def is_login_source(source: str | None) -> bool:
    return source in LOGIN_SOURCES
