"""checks.consul without an agent: address forms, env parsing, tokens kept secret."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from checks.consul import (
    ConsulAddress,
    ConsulClient,
    ConsulConfigError,
    ConsulSettings,
    ConsulUnreachable,
)
from checks.roletag.plan import registration_from_agent_service

SECRET = "8f2c1d7e-0000-4b1a-9c3d-5e6f7a8b9c0d"


@pytest.mark.parametrize(
    ("value", "scheme", "host", "unix_socket"),
    [
        ("127.0.0.1:8500", "http", "127.0.0.1:8500", None),
        ("consul.local:8501", "http", "consul.local:8501", None),
        ("http://127.0.0.1:8500", "http", "127.0.0.1:8500", None),
        ("http://127.0.0.1:8500/", "http", "127.0.0.1:8500", None),
        ("https://consul.example:8501", "https", "consul.example:8501", None),
        ("HTTPS://consul.example:8501", "https", "consul.example:8501", None),
        ("[::1]:8500", "http", "[::1]:8500", None),
        ("unix:///run/consul/http.sock", "http", "localhost", "/run/consul/http.sock"),
        ("  127.0.0.1:8500\n", "http", "127.0.0.1:8500", None),
    ],
)
def test_address_forms(value: str, scheme: str, host: str, unix_socket: str | None) -> None:
    address = ConsulAddress.parse(value)
    assert (address.scheme, address.host, address.unix_socket) == (scheme, host, unix_socket)


@pytest.mark.parametrize(
    "value", ["", "   ", "tcp://127.0.0.1:8500", "unix://", "http://host:8500/v1", "https://"]
)
def test_bad_addresses_name_the_variable(value: str) -> None:
    with pytest.raises(ConsulConfigError, match="CONSUL_HTTP_ADDR"):
        ConsulAddress.parse(value)


@pytest.mark.parametrize("value", ["2001:db8::2:8500", "::1", "http://[::1]:85x0"])
def test_unbracketed_ipv6_or_bad_port_is_a_configuration_error(value: str) -> None:
    """What a Nagios admin may write in _CONSUL_ADDR: a clear UNKNOWN, not an internal error."""
    with pytest.raises(ConsulConfigError, match=r"CONSUL_HTTP_ADDR.*\[2001:db8::2\]:8500"):
        ConsulAddress.parse(value)


def test_consul_role_with_an_unbracketed_ipv6_address_says_how_to_write_it() -> None:
    from tests.plugin_run import check_postgresql

    run = check_postgresql(
        "consul-role", "-H", "127.0.0.1", "-p", "1", "-t", "3", "--consul-addr", "2001:db8::2:8500"
    )
    # consul-role's own Consul trouble, a bad address included, is WARNING (README: it
    # warns without evicting anyone): exit 3 would count as critical for Consul
    assert run.code == 1, run.first_line
    assert run.first_line.startswith("PG_CONSUL_ROLE WARNING - Consul: --consul-addr=")
    assert "internal error" not in run.first_line
    assert "[2001:db8::2]:8500" in run.first_line


def test_address_str_is_what_an_operator_wrote() -> None:
    assert str(ConsulAddress.parse("unix:///tmp/c.sock")) == "unix:///tmp/c.sock"
    assert str(ConsulAddress.parse("127.0.0.1:8500")) == "http://127.0.0.1:8500"


def test_defaults_without_environment() -> None:
    settings = ConsulSettings.from_env({})
    assert str(settings.address) == "http://127.0.0.1:8500"
    assert settings.token is None
    assert settings.verify is True
    assert settings.connect_timeout <= 2.0


def test_override_address_wins_over_environment() -> None:
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_ADDR": "10.0.0.1:8500"}, address="unix:///tmp/agent.sock"
    )
    assert settings.address.unix_socket == "/tmp/agent.sock"


def test_bad_override_names_the_option() -> None:
    with pytest.raises(ConsulConfigError, match="--consul-addr"):
        ConsulSettings.from_env({}, address="ftp://x")


@pytest.mark.parametrize("flag", ["true", "1", "T", "TRUE", "True"])
def test_consul_http_ssl_switches_to_https(flag: str) -> None:
    # As in Consul's Go client: an explicit TLS request is never reverted by http://.
    for addr in ("127.0.0.1:8501", "http://127.0.0.1:8501"):
        settings = ConsulSettings.from_env({"CONSUL_HTTP_ADDR": addr, "CONSUL_HTTP_SSL": flag})
        assert settings.address.base_url == "https://127.0.0.1:8501"


def test_consul_http_ssl_false_keeps_https_address() -> None:
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_ADDR": "https://c:8501", "CONSUL_HTTP_SSL": "false"}
    )
    assert settings.address.scheme == "https"


def test_consul_http_ssl_ignored_for_unix_socket() -> None:
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_ADDR": "unix:///tmp/s.sock", "CONSUL_HTTP_SSL": "true"}
    )
    assert settings.address.unix_socket == "/tmp/s.sock"


def test_tls_variables() -> None:
    settings = ConsulSettings.from_env(
        {
            "CONSUL_HTTP_SSL_VERIFY": "false",
            "CONSUL_CACERT": "/etc/consul/ca.pem",
            "CONSUL_CAPATH": "/etc/consul/ca.d",
            "CONSUL_CLIENT_CERT": "/etc/consul/client.pem",
            "CONSUL_CLIENT_KEY": "/etc/consul/client-key.pem",
        }
    )
    assert settings.verify is False
    assert settings.ca_file == "/etc/consul/ca.pem"
    assert settings.ca_path == "/etc/consul/ca.d"
    assert settings.client_cert == "/etc/consul/client.pem"
    assert settings.client_key == "/etc/consul/client-key.pem"


@pytest.mark.parametrize("name", ["CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"])
def test_bad_booleans_name_the_variable(name: str) -> None:
    with pytest.raises(ConsulConfigError, match=name):
        ConsulSettings.from_env({name: "yes please"})


def test_client_key_without_cert_is_refused() -> None:
    with pytest.raises(ConsulConfigError, match="CONSUL_CLIENT_CERT"):
        ConsulSettings.from_env({"CONSUL_CLIENT_KEY": "/k.pem"})


def test_missing_tls_files_are_a_config_error() -> None:
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_ADDR": "https://127.0.0.1:1", "CONSUL_CACERT": "/nonexistent/ca.pem"}
    )
    with ConsulClient(settings) as client, pytest.raises(ConsulConfigError, match="CACERT"):
        client.self()


def test_token_from_environment() -> None:
    settings = ConsulSettings.from_env({"CONSUL_HTTP_TOKEN": f"  {SECRET}\n"})
    assert settings.token is not None
    assert settings.token.value == SECRET
    assert settings.token.source == "CONSUL_HTTP_TOKEN"


def test_token_file_wins_over_token_variable(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{SECRET}\n")
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_TOKEN": "other", "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    )
    assert settings.token is not None
    assert settings.token.value == SECRET
    assert str(token_file) in settings.token.source


def test_empty_token_file_falls_back_to_variable(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_TOKEN": SECRET, "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    )
    assert settings.token is not None
    assert settings.token.value == SECRET


def test_token_file_override_wins_over_environment(tmp_path: Path) -> None:
    env_file, cli_file = tmp_path / "env", tmp_path / "cli"
    env_file.write_text("from-env")
    cli_file.write_text(SECRET)
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_TOKEN_FILE": str(env_file)}, token_file=str(cli_file)
    )
    assert settings.token is not None
    assert settings.token.value == SECRET


def test_unreadable_token_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConsulConfigError, match=re.escape(str(missing))):
        ConsulSettings.from_env({"CONSUL_HTTP_TOKEN_FILE": str(missing)})


def test_token_with_control_characters_is_refused_without_echo(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{SECRET}\x07bell")
    with pytest.raises(ConsulConfigError) as caught:
        ConsulSettings.from_env({"CONSUL_HTTP_TOKEN_FILE": str(token_file)})
    assert SECRET not in str(caught.value)


def test_token_never_in_repr_or_str() -> None:
    settings = ConsulSettings.from_env({"CONSUL_HTTP_TOKEN": SECRET})
    client = ConsulClient(settings)
    for text in (
        repr(settings),
        str(settings),
        repr(settings.token),
        str(settings.token),
        repr(client),
        str(client),
    ):
        assert SECRET not in text
    assert "CONSUL_HTTP_TOKEN" in repr(settings)


def _refusing_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_agent_error_is_actionable_and_secret_free() -> None:
    port = _refusing_port()
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_ADDR": f"127.0.0.1:{port}", "CONSUL_HTTP_TOKEN": SECRET}
    )
    with ConsulClient(settings) as client, pytest.raises(ConsulUnreachable) as caught:
        client.agent_service("pg-db")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "CONSUL_HTTP_ADDR" in message
    assert SECRET not in message
    assert SECRET not in repr(caught.value)
    # `from None`: no httpx exception (holding the request headers) rides along.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_missing_unix_socket_is_unreachable(tmp_path: Path) -> None:
    settings = ConsulSettings.from_env({"CONSUL_HTTP_ADDR": f"unix://{tmp_path}/none.sock"})
    with ConsulClient(settings) as client, pytest.raises(ConsulUnreachable, match=r"none\.sock"):
        client.self()


def test_silent_listener_times_out_quickly() -> None:
    # A listener that accepts but never answers: the read timeout must bound the call.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        settings = ConsulSettings(
            address=ConsulAddress.parse(f"127.0.0.1:{port}"), read_timeout=0.3
        )
        with (
            ConsulClient(settings) as client,
            pytest.raises(ConsulUnreachable, match="did not answer"),
        ):
            client.self()


def test_registration_from_agent_service_round_trip_shape() -> None:
    answer = {
        "ID": "pg-db",
        "Service": "pg-db",
        "Tags": ["pg"],
        "Meta": {"a": "b"},
        "Port": 5432,
        "Address": "",
        "Weights": {"Passing": 3, "Warning": 1},
        "EnableTagOverride": False,
        "ContentHash": "d5c52ade298e0fb6",
        "Datacenter": "dc1",
        "Connect": {"Native": True},
    }
    registration = registration_from_agent_service(answer)
    assert registration["Name"] == "pg-db"
    for dropped in ("Service", "ContentHash", "Datacenter", "Checks"):
        assert dropped not in registration
    for kept in (
        "ID",
        "Tags",
        "Meta",
        "Port",
        "Address",
        "Weights",
        "EnableTagOverride",
        "Connect",
    ):
        assert registration[kept] == answer[kept]
    assert answer["Service"] == "pg-db", "the input must not be modified"


def test_wait_outside_consul_limits_is_refused() -> None:
    with ConsulClient(ConsulSettings()) as client, pytest.raises(ValueError, match="wait"):
        client.agent_service("pg-db", index_hash="abc", wait=601)


def test_import_does_not_load_httpx() -> None:
    # Executables Consul runs every few seconds import this module (docs/design.md §2).
    code = "import sys, checks.consul; sys.exit('httpx' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=False
    )
    assert result.returncode == 0, "checks.consul imported httpx at module level"


def test_kept_http_clients_are_shared_across_tokens_and_outlive_their_users() -> None:
    """The resident daemon's checks share one httpx client per agent (checks/consul.py,
    kept_http_clients): a ConsulClient closing must not close it, and the token, sent
    with each request, must not split it."""
    import contextvars

    import httpx

    from checks.consul import ConsulToken, KeptHttpClients, kept_http_clients

    kept = KeptHttpClients()
    settings = ConsulSettings.from_env({"CONSUL_HTTP_ADDR": "127.0.0.1:1"})

    def two_runs() -> tuple[httpx.Client, httpx.Client]:
        kept_http_clients.set(kept)
        clients = []
        for token in (None, ConsulToken(SECRET, "CONSUL_HTTP_TOKEN")):
            with ConsulClient(replace(settings, token=token)) as client:
                clients.append(client._http())
        return clients[0], clients[1]

    first, second = contextvars.copy_context().run(two_runs)
    assert first is second
    assert not first.is_closed
    # without the context variable, each ConsulClient has (and closes) its own
    own = ConsulClient(settings)
    assert own._http() is not first
    own.close()
    kept.close()
    assert first.is_closed
