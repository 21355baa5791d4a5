"""The small Consul agent HTTP client the role reporter talks through.

Configuration follows Consul's own CLI and Go client (`api.DefaultConfig`), so an operator's
existing environment works unchanged: `CONSUL_HTTP_ADDR` in every form (`host:port`,
`http://host:port`, `https://host:port`, `unix:///path/to.sock`), `CONSUL_HTTP_TOKEN`,
`CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_SSL`, `CONSUL_HTTP_SSL_VERIFY`, `CONSUL_CACERT`,
`CONSUL_CAPATH`, `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY`. Tokens come only from the
environment or a file, never argv (docs/design.md §2), and never appear in a repr, a log line
or an exception message.

httpx costs ~90 ms to import and this module is imported by executables Consul runs every
few seconds, so httpx (and ssl) are imported inside the functions that use them.

Facts about Consul 1.8.7 this client relies on (observed, see harness/consul.py):
- `GET /v1/agent/service/:id` answers with `Service` for the name and a `ContentHash`;
  `PUT /v1/agent/service/register` rejects both (400 "unknown field") and wants `Name`.
  Everything else it returns (`Weights`, `TaggedAddresses` with the derived
  `lan_ipv4`/`wan_ipv4`, `Proxy`, `Connect`, `Kind`, `Meta`, `EnableTagOverride`) PUTs
  back unchanged. `registration_from_agent_service()` (checks/roletag/plan.py) does that
  conversion.
- Re-registering a conf.d service without `Checks` keeps its conf.d checks attached.
  `/v1/agent/checks` keeps showing the old `ServiceTags` on those checks (the file's,
  still after 10 s), and the checks' `ServiceTags` in `/v1/health/service` catch up
  only sometimes, while the service's `Tags` there (and `?tag=` filtering, hence DNS)
  change at once: read tags from the service, never from a check.
- An identical re-registration keeps the `ContentHash`, so it does not wake watchers.
- 403 bodies: "Permission denied" (reads), "Permission denied: Missing service:write on
  pg-db" (register), "ACL not found" (the token does not exist).
- List endpoints filter by ACL instead of answering 403: a token without `service:read`
  and `node:read` gets an empty list from `/v1/health/service/:name`, not an error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import ssl

    import httpx

DEFAULT_ADDRESS = "127.0.0.1:8500"
# A local agent answers in milliseconds; a longer connect timeout only delays noticing
# that it is down (the reporter retries about once a second, docs/design.md §5).
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
# Consul adds up to wait/16 of jitter to a blocking query before it answers.
BLOCKING_JITTER_DIVISOR = 16
# Consul's own ceiling for ?wait=.
MAX_WAIT_SECONDS = 600.0


class ConsulError(Exception):
    """Consul answered with an error, or the client is misconfigured.

    `status` is the HTTP status when Consul answered, else None.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConsulConfigError(ConsulError):
    """A CONSUL_* variable, an override or a file they name is unusable."""


class ConsulUnreachable(ConsulError):
    """No answer from the agent: refused, reset, timed out. Usually the agent is
    restarting; retry about once a second."""


class ConsulPermissionDenied(ConsulError):
    """403: the token lacks a permission, or the agent does not know the token."""

    @property
    def token_unknown(self) -> bool:
        """Consul said "ACL not found": a deleted token, another cluster's, or (for a
        moment after a restart) an ACL system not up yet."""
        return "does not know the" in str(self)


class ConsulNotFound(ConsulError):
    """404: e.g. the service ID is not registered on this agent, or no such KV key."""

    def __init__(self, message: str, *, status: int | None = None, index: int = 0) -> None:
        super().__init__(message, status=status)
        self.index = index


# strconv.ParseBool, which Consul uses for its boolean variables.
_TRUE_WORDS = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE_WORDS = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _parse_bool(name: str, value: str) -> bool:
    if value in _TRUE_WORDS:
        return True
    if value in _FALSE_WORDS:
        return False
    raise ConsulConfigError(f"{name}={value!r} is not a boolean (use true or false)")


@dataclass(frozen=True)
class ConsulToken:
    """An ACL token and where it came from. Only `source` shows in repr and str."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"token from {self.source}"


@dataclass(frozen=True)
class ConsulAddress:
    """Where the agent's HTTP API listens: `host:port` over http(s), or a unix socket."""

    scheme: str = "http"
    host: str = DEFAULT_ADDRESS
    unix_socket: str | None = None

    @classmethod
    def parse(cls, value: str, *, source: str = "CONSUL_HTTP_ADDR") -> ConsulAddress:
        """Parse a `CONSUL_HTTP_ADDR`-style address; `source` names it in error messages."""
        text = value.strip()
        if not text:
            raise ConsulConfigError(f"{source} is empty")
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "http", text
        scheme = scheme.lower()
        if scheme == "unix":
            if not rest:
                raise ConsulConfigError(f"{source}={value!r} names no socket path")
            return cls(scheme="http", host="localhost", unix_socket=rest)
        if scheme not in ("http", "https"):
            raise ConsulConfigError(
                f"{source}={value!r}: unknown scheme {scheme!r} "
                "(use host:port, http://host:port, https://host:port or unix:///path)"
            )
        host = rest.rstrip("/")
        if not host or "/" in host or "?" in host:
            raise ConsulConfigError(f"{source}={value!r} must be host:port without a path")
        try:
            # an IPv6 address without brackets reads as host "2001" and a bad port
            urlsplit(f"{scheme}://{host}").port  # noqa: B018
        except ValueError:
            raise ConsulConfigError(
                f"{source}={value!r} is not host:port "
                "(an IPv6 address goes in brackets: [2001:db8::2]:8500)"
            ) from None
        return cls(scheme=scheme, host=host)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def __str__(self) -> str:
        if self.unix_socket:
            return f"unix://{self.unix_socket}"
        return self.base_url


@dataclass(frozen=True)
class ConsulSettings:
    """How to reach the local Consul agent. Build it with `from_env()`."""

    address: ConsulAddress = field(default_factory=ConsulAddress)
    token: ConsulToken | None = None
    # TLS: verify the server certificate (CONSUL_HTTP_SSL_VERIFY), against these CAs.
    verify: bool = True
    ca_file: str | None = None
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS
    read_timeout: float = READ_TIMEOUT_SECONDS

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        address: str | None = None,
        token_file: str | None = None,
    ) -> ConsulSettings:
        """Settings from Consul's standard variables, with explicit overrides on top.

        `address` (e.g. `--consul-addr`) replaces CONSUL_HTTP_ADDR; `token_file`
        replaces CONSUL_HTTP_TOKEN_FILE. There is deliberately no token override: a token
        on the command line is readable by every user through `ps`.

        As in Consul's Go client, a non-empty token file wins over CONSUL_HTTP_TOKEN, and
        CONSUL_HTTP_SSL=true switches to https even when the address says http://.
        """
        env = os.environ if environ is None else environ

        if address is not None:
            parsed = ConsulAddress.parse(address, source="--consul-addr")
        elif env.get("CONSUL_HTTP_ADDR"):
            parsed = ConsulAddress.parse(env["CONSUL_HTTP_ADDR"])
        else:
            parsed = ConsulAddress()
        ssl_flag = env.get("CONSUL_HTTP_SSL", "")
        if ssl_flag and _parse_bool("CONSUL_HTTP_SSL", ssl_flag) and parsed.unix_socket is None:
            parsed = ConsulAddress(scheme="https", host=parsed.host)

        verify_flag = env.get("CONSUL_HTTP_SSL_VERIFY", "")
        verify = _parse_bool("CONSUL_HTTP_SSL_VERIFY", verify_flag) if verify_flag else True

        client_cert = env.get("CONSUL_CLIENT_CERT") or None
        client_key = env.get("CONSUL_CLIENT_KEY") or None
        if client_key and not client_cert:
            raise ConsulConfigError("CONSUL_CLIENT_KEY is set but CONSUL_CLIENT_CERT is not")

        return cls(
            address=parsed,
            token=_token_from(env, token_file),
            verify=verify,
            ca_file=env.get("CONSUL_CACERT") or None,
            ca_path=env.get("CONSUL_CAPATH") or None,
            client_cert=client_cert,
            client_key=client_key,
        )


def _token_from(env: Mapping[str, str], token_file: str | None) -> ConsulToken | None:
    if token_file is not None:
        path, source = token_file, f"token file {token_file}"
    else:
        path = env.get("CONSUL_HTTP_TOKEN_FILE", "")
        source = f"CONSUL_HTTP_TOKEN_FILE={path}"
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            # strerror only: the message must never carry file content.
            raise ConsulConfigError(
                f"cannot read the Consul token file {path}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise ConsulConfigError(f"the Consul token file {path} is not UTF-8 text") from None
        if value:
            return _checked_token(value, source)
        if token_file is not None or not env.get("CONSUL_HTTP_TOKEN", "").strip():
            # An empty file is a deployment mistake, not "no token": going on anonymous
            # would only fail later with a less useful 403. (Consul's own client falls
            # back to CONSUL_HTTP_TOKEN, so that stays when the variable is set.)
            raise ConsulConfigError(f"the Consul token file {path} is empty")
    value = env.get("CONSUL_HTTP_TOKEN", "").strip()
    return _checked_token(value, "CONSUL_HTTP_TOKEN") if value else None


def token_file_problem(path: str | None) -> str | None:
    """Why a daemon must not use this token file: readable by every user of the host
    (the token is a secret, docs/design.md §2). None when fine or when there is no file."""
    if not path:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # reading it reports that, with the reason
    if mode & 0o004:
        return (
            f"the Consul token file {path} is readable by every user (mode "
            f"{mode & 0o777:03o}); chmod 600 it, owned by the reporter's user"
        )
    return None


def _checked_token(value: str, source: str) -> ConsulToken:
    # A header value cannot hold control characters; say where the bad token came from
    # without echoing it.
    if not value.isprintable() or not value.isascii():
        raise ConsulConfigError(
            f"the Consul token from {source} contains characters a token cannot hold"
        )
    return ConsulToken(value=value, source=source)


def _wait_param(wait: float) -> str:
    if not 0 < wait <= MAX_WAIT_SECONDS:
        raise ValueError(f"wait must be in (0, {MAX_WAIT_SECONDS:g}] seconds, not {wait!r}")
    return f"{round(wait * 1000)}ms"


def _dc(datacenter: str | None) -> dict[str, str]:
    return {"dc": datacenter} if datacenter else {}


def _key_path(key: str) -> str:
    return quote(key.strip("/"), safe="/")


def _index_of(response: httpx.Response) -> int:
    try:
        return int(response.headers.get("X-Consul-Index", "0"))
    except ValueError:
        return 0


def _summarise_body(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class KeptHttpClients:
    """httpx clients kept for a process's life, one per agent address and TLS setup.

    The resident daemon runs consul-role and lag --consul-service every few seconds; a
    ConsulClient of their own per run built an httpx client and a TCP connection to the
    agent each time, the larger part of those checks' CPU (docs/design.md §8). With
    `kept_http_clients` set, every ConsulClient shares one of these instead (httpx's
    Client is safe to share between threads; the token goes with each request, never
    with the client).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[ConsulSettings, httpx.Client] = {}

    def client(self, settings: ConsulSettings, build: Callable[[], httpx.Client]) -> httpx.Client:
        key = replace(settings, token=None)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = build()
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


# Set (per thread: a ContextVar) where ConsulClients should share kept httpx clients.
kept_http_clients: ContextVar[KeptHttpClients | None] = ContextVar(
    "kept_http_clients", default=None
)


class ConsulClient:
    """A client for the local Consul agent's HTTP API.

    One instance keeps one connection pool; use it as a context manager or call
    `close()`. Every method raises a ConsulError subclass, never an httpx exception.
    """

    def __init__(self, settings: ConsulSettings | None = None) -> None:
        self.settings = settings if settings is not None else ConsulSettings.from_env()
        self._client: httpx.Client | None = None
        # a kept client (kept_http_clients) is not this instance's to close
        self._owns_client = True

    def __repr__(self) -> str:
        return f"<ConsulClient {self.settings.address} {self.settings.token or 'anonymous'}>"

    def __enter__(self) -> ConsulClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
        self._client = None

    # -- the API the reporter uses -------------------------------------------------------

    def self(self) -> dict[str, Any]:
        """`GET /v1/agent/self`: the agent's config and member info."""
        agent: dict[str, Any] = self._json(
            "GET", "/v1/agent/self", needs="agent:read on this agent's node"
        )
        return agent

    def _blocking(self, params: dict[str, str], wait: float | None) -> float:
        """Make a read a blocking query that answers within `wait` (Consul's default 5 min
        when None); returns the read timeout it needs: the wait, Consul's jitter, and the
        usual answer time."""
        if wait is not None:
            params["wait"] = _wait_param(wait)
        effective_wait = wait if wait is not None else 300.0
        return (
            effective_wait + effective_wait / BLOCKING_JITTER_DIVISOR + self.settings.read_timeout
        )

    def agent_service(
        self,
        service_id: str,
        *,
        index_hash: str | None = None,
        wait: float | None = None,
    ) -> tuple[dict[str, Any], str]:
        """`GET /v1/agent/service/:id` -> (service, content hash).

        With `index_hash` (the hash a previous call returned) this is a blocking query:
        the agent answers when the service differs from that hash, or after `wait`
        seconds (Consul's default 5 min when None) with the same hash.
        Raises ConsulNotFound when the service is not registered on this agent.
        """
        params: dict[str, str] = {}
        read_timeout = None
        if index_hash is not None:
            params["hash"] = index_hash
            read_timeout = self._blocking(params, wait)
        response = self._request(
            "GET",
            f"/v1/agent/service/{quote(service_id, safe='')}",
            params=params,
            read_timeout=read_timeout,
            # ACL rules match service names; only the ID is known before a read succeeds.
            needs=(
                "service:read on the service's name, not its ID (service:read on "
                f'"{service_id}" works only if "{service_id}" is its name too)'
            ),
        )
        service = self._decode(response)
        content_hash = response.headers.get("X-Consul-ContentHash") or service.get(
            "ContentHash", ""
        )
        return service, content_hash

    def register_service(
        self, definition: Mapping[str, Any], *, replace_existing_checks: bool = False
    ) -> None:
        """`PUT /v1/agent/service/register` with `definition` as the body.

        For a read-modify-write pass the GET answer through
        `registration_from_agent_service()` (checks/roletag/plan.py) first. Without
        `Checks` in the body the service keeps the checks it has (conf.d checks included).
        """
        name = definition.get("Name") or definition.get("Service") or definition.get("ID")
        params = {"replace-existing-checks": "true"} if replace_existing_checks else None
        self._request(
            "PUT",
            "/v1/agent/service/register",
            params=params,
            json_body=dict(definition),
            needs=f'service:write on "{name}"',
        )

    def health_service(
        self, name: str, *, tag: str | None = None, passing: bool = False
    ) -> list[dict[str, Any]]:
        """`GET /v1/health/service/:name`: the catalog's instances with node and checks.

        ACLs filter this list rather than refuse it: a token without `service:read` on
        the service and `node:read` on the nodes gets an empty list.
        """
        params: dict[str, str] = {}
        if tag is not None:
            params["tag"] = tag
        if passing:
            params["passing"] = "true"
        instances: list[dict[str, Any]] = self._json(
            "GET",
            f"/v1/health/service/{quote(name, safe='')}",
            params=params,
            needs=f'service:read on "{name}" and node:read',
        )
        return instances

    # -- sessions and the KV lock (the fence, checks/roletag/fencing.py) ------------------
    # Sessions and KV live in the servers' raft state, per datacenter: `datacenter` sends
    # the request to another one (a fence global to a multi-DC cluster lives in one DC).

    def create_session(self, body: Mapping[str, Any], *, datacenter: str | None = None) -> str:
        """`PUT /v1/session/create`; returns the new session's ID."""
        created = self._json(
            "PUT",
            "/v1/session/create",
            params=_dc(datacenter),
            json_body=dict(body),
            needs="session:write on this node (session or session_prefix rule)",
        )
        return str(created["ID"])

    def renew_session(self, session_id: str, *, datacenter: str | None = None) -> bool:
        """`PUT /v1/session/renew/:id`; False when the session no longer exists."""
        try:
            self._request(
                "PUT",
                f"/v1/session/renew/{quote(session_id, safe='')}",
                params=_dc(datacenter),
                needs="session:write on this node",
            )
        except ConsulNotFound:
            return False
        return True

    def destroy_session(self, session_id: str, *, datacenter: str | None = None) -> None:
        """`PUT /v1/session/destroy/:id`: its locks are released at once, without lock-delay."""
        self._request(
            "PUT",
            f"/v1/session/destroy/{quote(session_id, safe='')}",
            params=_dc(datacenter),
            needs="session:write on this node",
        )

    def session_info(
        self, session_id: str, *, datacenter: str | None = None
    ) -> dict[str, Any] | None:
        """`GET /v1/session/info/:id`: the session, or None when it does not exist."""
        found = self._json(
            "GET",
            f"/v1/session/info/{quote(session_id, safe='')}",
            params=_dc(datacenter),
            needs="session:read",
        )
        return found[0] if found else None

    def catalog_nodes(self, *, datacenter: str | None = None) -> list[dict[str, Any]]:
        """`GET /v1/catalog/nodes` (ACL-filtered: needs node:read)."""
        return (
            self._json("GET", "/v1/catalog/nodes", params=_dc(datacenter), needs="node:read") or []
        )

    def kv_get(
        self,
        key: str,
        *,
        datacenter: str | None = None,
        index: int | None = None,
        wait: float | None = None,
        consistent: bool = False,
    ) -> tuple[dict[str, Any] | None, int]:
        """`GET /v1/kv/:key` -> (entry or None when absent, X-Consul-Index).

        With `index` this is a blocking query: Consul answers when the key's index moves
        past it (acquire, release, a session invalidated), or after `wait` seconds.
        """
        params = _dc(datacenter)
        read_timeout = None
        if index is not None:
            params["index"] = str(index)
            read_timeout = self._blocking(params, wait)
        if consistent:
            params["consistent"] = ""
        try:
            response = self._request(
                "GET",
                f"/v1/kv/{_key_path(key)}",
                params=params,
                read_timeout=read_timeout,
                needs=f'key:read on "{key}"',
            )
        except ConsulNotFound as exc:
            # 404 means "no such key"; its index still orders the answers
            return None, exc.index
        entries = self._decode(response)
        return (entries[0] if entries else None), _index_of(response)

    def kv_put(
        self,
        key: str,
        value: str,
        *,
        acquire: str | None = None,
        release: str | None = None,
        cas: int | None = None,
        datacenter: str | None = None,
    ) -> bool:
        """`PUT /v1/kv/:key`; False when Consul refused the acquire/release/cas (the lock
        is held by another session, or is in its lock-delay)."""
        params = _dc(datacenter)
        if acquire is not None:
            params["acquire"] = acquire
        if release is not None:
            params["release"] = release
        if cas is not None:
            params["cas"] = str(cas)
        answer = self._json(
            "PUT",
            f"/v1/kv/{_key_path(key)}",
            params=params,
            content=value.encode(),
            needs=f'key:write on "{key}"',
        )
        return answer is True

    def agent_checks(self) -> dict[str, dict[str, Any]]:
        """`GET /v1/agent/checks`: this agent's checks by check ID (ACL-filtered)."""
        checks: dict[str, dict[str, Any]] = self._json(
            "GET", "/v1/agent/checks", needs="service:read / node:read"
        )
        return checks

    def update_check(self, check_id: str, status: str, output: str) -> None:
        """`PUT /v1/agent/check/update/:id`: set a TTL check's status ("passing",
        "warning" or "critical") and output, and restart its TTL.

        Consul answers 500 "does not have associated TTL" for an ID that is not a TTL
        check of this agent (a typo, or conf.d not loaded yet) and 403 without
        service:write on the check's service.
        """
        self._request(
            "PUT",
            f"/v1/agent/check/update/{quote(check_id, safe='')}",
            json_body={"Status": status, "Output": output},
            needs=f'service:write on the service that check "{check_id}" belongs to',
        )

    # Prepared queries live in the servers' raft state, not in conf.d (docs/design.md §5).
    _QUERY_NEEDS = "query write on the query name (query/query_prefix rules)"

    def prepared_queries(self) -> list[dict[str, Any]]:
        """`GET /v1/query`: the prepared queries this token may see."""
        return self._json("GET", "/v1/query", needs=self._QUERY_NEEDS) or []

    def create_prepared_query(self, definition: Mapping[str, Any]) -> str:
        """`POST /v1/query`; returns the new query's ID."""
        created = self._json("POST", "/v1/query", needs=self._QUERY_NEEDS, json_body=definition)
        query_id: str = created["ID"]
        return query_id

    def update_prepared_query(self, query_id: str, definition: Mapping[str, Any]) -> None:
        """`PUT /v1/query/:id` with the whole definition."""
        self._request(
            "PUT",
            f"/v1/query/{query_id}",
            needs=self._QUERY_NEEDS,
            json_body={**definition, "ID": query_id},
        )

    # -- plumbing ------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            kept = kept_http_clients.get()
            if kept is not None:
                self._owns_client = False
                self._client = kept.client(self.settings, self._new_http)
            else:
                self._owns_client = True
                self._client = self._new_http()
        return self._client

    def _new_http(self) -> httpx.Client:
        import httpx

        settings = self.settings
        transport = None
        if settings.address.unix_socket:
            transport = httpx.HTTPTransport(uds=settings.address.unix_socket)
        # Plain http (or a unix socket) has no certificate to verify: True would
        # still make httpx load the CA bundle, ~20 ms of CPU per client (measured),
        # paid on every run of consul-role and lag --consul-service, in the resident
        # daemon every few seconds.
        verify: bool | ssl.SSLContext = False
        if settings.address.scheme == "https":
            verify = self._ssl_context()
        return httpx.Client(
            base_url=settings.address.base_url,
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            # Consul's HTTP API never redirects; environment proxies must not catch
            # a loopback agent.
            trust_env=False,
            follow_redirects=False,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        import ssl

        settings = self.settings
        try:
            context = ssl.create_default_context(cafile=settings.ca_file, capath=settings.ca_path)
            if not settings.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if settings.client_cert:
                context.load_cert_chain(settings.client_cert, settings.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConsulConfigError(
                "cannot load the Consul TLS files (CONSUL_CACERT, CONSUL_CAPATH, "
                f"CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY): {exc}"
            ) from None
        return context

    def _headers(self) -> dict[str, str]:
        token = self.settings.token
        return {"X-Consul-Token": token.value} if token else {}

    def _request(
        self,
        method: str,
        path: str,
        *,
        needs: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        import httpx

        client = self._http()
        timeout = (
            httpx.USE_CLIENT_DEFAULT
            if read_timeout is None
            else httpx.Timeout(read_timeout, connect=self.settings.connect_timeout)
        )
        where = f"the Consul agent at {self.settings.address}"
        try:
            response = client.request(
                method,
                path,
                params=params,
                json=json_body,
                content=content,
                headers=self._headers(),
                timeout=timeout,
            )
        except httpx.TimeoutException as exc:
            phase = "accept a connection" if isinstance(exc, httpx.ConnectTimeout) else "answer"
            raise ConsulUnreachable(
                f"{where} did not {phase} in time ({method} {path}); is it running and "
                "is CONSUL_HTTP_ADDR right?"
            ) from None
        except httpx.TransportError as exc:
            reason = self._redact(str(exc) or type(exc).__name__)
            if _is_tls_failure(exc):
                if "WRONG_VERSION_NUMBER" in reason:
                    # What an https client reads when the port speaks plain HTTP.
                    hint = (
                        "the agent seems to speak plain HTTP there; use http:// or unset "
                        "CONSUL_HTTP_SSL"
                    )
                else:
                    hint = (
                        "check CONSUL_CACERT/CONSUL_CAPATH, CONSUL_CLIENT_CERT/KEY or "
                        "CONSUL_HTTP_SSL_VERIFY"
                    )
                raise ConsulError(f"TLS with {where} failed: {reason}; {hint}") from None
            raise ConsulUnreachable(
                f"cannot reach {where}: {reason}; is it running and is CONSUL_HTTP_ADDR right?"
            ) from None
        if response.is_success:
            return response
        self._raise_for(response, method, path, needs)
        raise AssertionError("unreachable")  # _raise_for always raises

    def _raise_for(self, response: httpx.Response, method: str, path: str, needs: str) -> None:
        status = response.status_code
        body = self._redact(_summarise_body(response.text)) or response.reason_phrase
        token = self.settings.token
        who = str(token) if token else "no token (anonymous)"
        if status == 403:
            if "acl not found" in body.lower():
                raise ConsulPermissionDenied(
                    f"Consul does not know the {who}: {body}; the token was deleted "
                    "or belongs to another cluster",
                    status=status,
                )
            raise ConsulPermissionDenied(
                f"Consul refused {method} {path} with {who}: {body}; the token needs {needs}",
                status=status,
            )
        if status == 404:
            raise ConsulNotFound(
                f"{method} {path}: {body}", status=status, index=_index_of(response)
            )
        raise ConsulError(f"Consul answered {status} to {method} {path}: {body}", status=status)

    def _json(self, method: str, path: str, *, needs: str, **kwargs: Any) -> Any:
        return self._decode(self._request(method, path, needs=needs, **kwargs))

    def _decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ConsulError(
                f"{self.settings.address} answered {response.request.url.path} with "
                f"something that is not JSON: {_summarise_body(response.text, 80)!r}; "
                "is CONSUL_HTTP_ADDR a Consul agent?"
            ) from None

    def _redact(self, text: str) -> str:
        token = self.settings.token
        return text.replace(token.value, "<token>") if token else text


def _is_tls_failure(exc: BaseException) -> bool:
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
