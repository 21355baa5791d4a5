"""WAL archiving: is the archiver running here, is it failing, is WAL waiting for it.

``pg_stat_archiver`` tells successes and failures apart by time: a failure newer than the
last success means the archive command is failing right now (the archiver retries the same
segment until it succeeds). What waits is read from ``pg_wal/archive_status`` (one
``.ready`` file per segment not yet archived) through ``pg_ls_archive_statusdir()``, which
only superusers and pg_monitor members may call, hence the privilege test first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import fetch_row

if TYPE_CHECKING:
    import psycopg

ARCHIVER_SQL = """
SELECT current_setting('archive_mode') AS archive_mode,
       pg_is_in_recovery() AS in_recovery,
       archived_count, last_archived_wal,
       -- greatest(now(), t) - t: an age that is never negative, and NULL when t is
       extract(epoch FROM greatest(now(), last_archived_time) - last_archived_time)::float8
           AS last_archived_age,
       failed_count, last_failed_wal,
       extract(epoch FROM greatest(now(), last_failed_time) - last_failed_time)::float8
           AS last_failed_age,
       coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)
           AS failing,
       has_function_privilege('pg_ls_archive_statusdir()', 'EXECUTE') AS can_list_status
FROM pg_stat_archiver
"""

READY_SQL = """
SELECT count(*)::int AS ready_wal_files,
       extract(epoch FROM greatest(now(), min(modification)) - min(modification))::float8
           AS oldest_ready_age
FROM pg_ls_archive_statusdir()
WHERE name LIKE '%.ready'
"""


@dataclass(frozen=True)
class ArchiverFacts:
    archive_mode: str
    in_recovery: bool
    archived_count: int
    last_archived_wal: str | None
    last_archived_age: float | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_age: float | None
    failing: bool
    can_list_status: bool
    ready_wal_files: int = 0
    oldest_ready_age: float | None = None

    @property
    def archives_here(self) -> bool:
        """A replica archives only with archive_mode=always; 'on' archives on the primary."""
        if self.archive_mode == "always":
            return True
        return self.archive_mode == "on" and not self.in_recovery

    @property
    def delay_seconds(self) -> float:
        """How long WAL has waited without the archiver making progress; 0 if none waits.

        The shorter of "since the last success" and "since the oldest waiting segment was
        completed": after an idle hour the first new segment has not waited an hour.
        """
        if not self.ready_wal_files:
            return 0.0
        ages = [a for a in (self.last_archived_age, self.oldest_ready_age) if a is not None]
        return max(0.0, min(ages)) if ages else 0.0


def read_archiver(conn: psycopg.Connection[dict[str, Any]]) -> ArchiverFacts:
    facts = fetch_row(conn, ARCHIVER_SQL, row_class=ArchiverFacts)
    if not (facts.archives_here and facts.can_list_status):
        return facts
    ready = fetch_row(conn, READY_SQL)
    return replace(facts, **ready)
