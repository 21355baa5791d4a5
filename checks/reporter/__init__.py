"""pg-role-reporter: keeps the local Consul service's role tag equal to PostgreSQL's role.

The only long-running part of pg-ha-checks (docs/design.md §1). Model (§5): conf.d
defines the service with role-neutral tags; this loop adds `leader` on a writable primary
and `follower` on a replica by read-modify-write of the agent's service, and publishes
role, timeline and system identifier in its Meta.

- A watcher thread holds a blocking query (`?hash=`) on the agent service: a `consul
  reload` or agent restart puts the conf.d tags back, the query returns at once and the
  tag is re-added within a fraction of a second.
- The main thread polls PostgreSQL every --interval over one kept connection and writes
  only when the desired registration differs from the current one.
- The fence (decided in checks/roletag/fencing.py, held by lock.py): the leader tag is
  carried only while this instance's Consul session holds the KV lock --lock-key; a
  writable primary that cannot get it is fenced (no tag, `pg_fenced_reason` in Meta, an
  ERROR line). A third thread holds a blocking query on the key, so a release is seen at
  once.
- Identity: a service whose Port (or published system identifier) is not the server's is
  never tagged; at start that, an unknown service id or a token that cannot write ends
  the process with one line (exit 2).
- PostgreSQL unreachable, or refusing the login: the role tag goes (fail closed), the
  lock is released, and the log says which of the two it is.
- The leader publishes its WAL position in Meta `pg_wal_lsn` (edge-triggered, rate-limited).
- The agent unreachable: retried about once a second (usually it is restarting); errors
  while it answers (403, 5xx): capped jittered backoff; one log line per new problem.

It is a daemon, not a check: logs go to stderr (the journal), one line per event; exit
status 0 on a clean stop, 1 when --once could not finish, 2 on a usage or setup error.

Modules: cli.py (the command, `main`), loop.py (the Reporter: one turn), watch.py (the
Consul watch threads), lock.py (session and leader lock), postgres.py (the kept
connection), board.py (the latest verdict, for the HTTP endpoints and the Consul push),
backoff.py, problems.py, systemd.py. The decisions it acts on are pure and shared with
the consul-role check: checks/roletag/.
"""
