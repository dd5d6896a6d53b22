"""Security policy without sockets: keys, CIDR rules, ZAP decisions, configuration checks."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import zmq
import zmq.auth

from zmqserver.cli import main as cli_main
from zmqserver.config import Config
from zmqserver.errors import ConfigError
from zmqserver.security import (
    ZAP_DENIED,
    ZAP_ERROR,
    ZAP_OK,
    ZAP_VERSION,
    AddressPolicy,
    ClientCredentials,
    PortPolicy,
    ServerSecurity,
    client_credentials,
    decode_key,
    encode_key,
    ipc_uid,
    load_key_dir,
    load_secret_key,
    parse_networks,
    peer_ip,
    remove_stale_dirs,
    write_key_pair,
    zap_decide,
)

DOMAIN = b"zmqserver"


def _raw(pair_public: bytes) -> bytes:
    return decode_key(pair_public, "test")


# -- keys -----------------------------------------------------------------------------------------


def test_decode_key_round_trip_and_errors():
    public, _ = zmq.curve_keypair()
    raw = decode_key(public, "k")
    assert len(raw) == 32
    assert encode_key(raw) == public.decode()
    with pytest.raises(ConfigError, match="k: a CURVE key is 40 Z85 characters .* got 39"):
        decode_key(public[:39], "k")
    with pytest.raises(ConfigError, match="characters outside Z85"):
        decode_key("~" * 40, "k")
    with pytest.raises(ConfigError, match="not a Z85-encoded CURVE key"):
        decode_key("#" * 40, "k")  # each 5-character group overflows 32 bits


def test_keygen_writes_private_secret_and_pyzmq_readable_pair(tmp_path):
    public_file, secret_file, pair = write_key_pair(tmp_path / "keys", "alice")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert not stat.S_IMODE(public_file.stat().st_mode) & 0o022
    # The format of zmq.auth.create_certificates: pyzmq's loaders read it.
    assert zmq.auth.load_certificate(secret_file) == (pair.public, pair.secret)
    assert zmq.auth.load_certificate(public_file) == (pair.public, None)
    assert zmq.auth.load_certificates(tmp_path / "keys") == {pair.public: True}
    assert load_secret_key(secret_file, "x") == pair
    assert pair.secret.decode() not in repr(pair)  # a logged KeyPair does not show its secret
    with pytest.raises(FileExistsError, match="not overwriting"):
        write_key_pair(tmp_path / "keys", "alice")
    assert zmq.auth.load_certificate(secret_file) == (pair.public, pair.secret)
    for bad in ("", ".hidden", "a/b"):
        with pytest.raises(ValueError, match="plain file name"):
            write_key_pair(tmp_path, bad)


def test_keygen_command(tmp_path, capsys):
    assert cli_main(["keygen", "server", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    public, _ = zmq.auth.load_certificate(tmp_path / "server.key")
    assert public.decode() in out
    assert cli_main(["keygen", "server", "--dir", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.fixture
def pair_file(tmp_path: Path) -> Path:
    return write_key_pair(tmp_path, "server")[1]


def test_secret_key_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"curve_secret_key_file: .*nope does not exist"):
        load_secret_key(tmp_path / "nope", "curve_secret_key_file")


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o601])
def test_secret_key_readable_by_others_is_refused(pair_file, mode):
    pair_file.chmod(mode)
    with pytest.raises(
        ConfigError, match=f"accessible by other users \\(mode {mode:04o}\\).*chmod"
    ):
        load_secret_key(pair_file, "curve_secret_key_file")


def test_secret_key_group_readable_is_accepted(pair_file):
    pair_file.chmod(0o640)
    load_secret_key(pair_file, "curve_secret_key_file")


def test_public_key_file_given_as_secret(pair_file):
    with pytest.raises(ConfigError, match="has no secret-key .*public .key file"):
        load_secret_key(pair_file.with_suffix(".key"), "curve_secret_key_file")


def test_secret_key_of_wrong_length(pair_file):
    text = pair_file.read_text()
    secret = zmq.auth.load_certificate(pair_file)[1]
    assert secret is not None
    pair_file.write_text(text.replace(secret.decode(), secret.decode()[:-5]))
    with pytest.raises(ConfigError, match="secret-key: a CURVE key is 40 .* got 35 characters"):
        load_secret_key(pair_file, "curve_secret_key_file")


def test_secret_key_not_matching_its_public_key(pair_file):
    text = pair_file.read_text()
    public = zmq.auth.load_certificate(pair_file)[0]
    other, _ = zmq.curve_keypair()
    pair_file.write_text(text.replace(public.decode(), other.decode()))
    with pytest.raises(ConfigError, match="public-key does not belong to the secret-key"):
        load_secret_key(pair_file, "curve_secret_key_file")


def test_garbage_file_is_not_a_certificate(tmp_path):
    bad = tmp_path / "bad.key_secret"
    bad.write_bytes(os.urandom(64).replace(b"public-key", b""))
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match="cannot read a CURVE certificate"):
        load_secret_key(bad, "curve_secret_key_file")


def test_key_dir_loads_public_keys_only(tmp_path):
    folder = tmp_path / "clients"
    folder.mkdir()
    a = write_key_pair(tmp_path, "a")
    b = write_key_pair(tmp_path, "b")
    for public_file, _, _ in (a, b):
        (folder / public_file.name).write_bytes(public_file.read_bytes())
    (folder / "notes.txt").write_text("ignored")
    assert load_key_dir(folder, "d") == {_raw(a[2].public), _raw(b[2].public)}


def test_key_dir_errors(tmp_path):
    with pytest.raises(ConfigError, match="d: .* is not a directory"):
        load_key_dir(tmp_path / "missing", "d")
    folder = tmp_path / "clients"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by every user"):
        load_key_dir(folder, "d")
    folder.chmod(0o755)
    (folder / "bad.key").write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(ConfigError, match=r"bad.key: public-key: a CURVE key is 40"):
        load_key_dir(folder, "d")


def test_client_credentials(tmp_path):
    public_file, secret_file, pair = write_key_pair(tmp_path, "server")
    _, client_secret, client = write_key_pair(tmp_path, "client")
    assert client_credentials(None, None) is None
    with pytest.raises(ConfigError, match="client_key_file needs server_key"):
        client_credentials(None, client_secret)
    by_text = client_credentials(pair.public.decode(), client_secret)
    by_file = client_credentials(public_file, client_secret)
    by_str_path = client_credentials(str(public_file), client_secret)
    assert by_text == by_file == by_str_path
    assert by_text is not None
    assert by_text.server_key == pair.public
    assert by_text.pair == client
    throwaway = client_credentials(pair.public, None)
    assert throwaway is not None
    assert throwaway.pair.public not in (pair.public, client.public)
    with pytest.raises(ConfigError, match="server_key: .* does not exist"):
        client_credentials(str(tmp_path / "nope.key"), None)
    assert ClientCredentials.ephemeral(pair.public).server_key == pair.public


# -- addresses ------------------------------------------------------------------------------------


def test_parse_networks_ipv4_ipv6_and_mapped():
    nets = parse_networks(
        ["10.0.0.0/8", " 192.168.1.7 ", "2001:db8::/32", "::ffff:172.16.0.0/108"], "allow"
    )
    assert nets == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("172.16.0.0/12"),  # IPv4-mapped: matched as IPv4
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.1/8", r"allow: '10.0.0.1/8' has host bits set \(did you mean '10.0.0.0/8'\?\)"),
        ("2001:db8::1/32", r"did you mean '2001:db8::/32'"),
        ("example.com", "allow: 'example.com' is not an IP address or CIDR range"),
        ("10.0.0.0/33", "is not an IP address or CIDR range"),
        ("", "is not an IP address"),
    ],
)
def test_parse_networks_errors_name_the_entry(entry, message):
    with pytest.raises(ConfigError, match=message):
        parse_networks([entry], "allow")


def test_peer_ip_and_ipc_uid():
    assert peer_ip("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert peer_ip("::ffff:10.1.2.3") == ipaddress.ip_address("10.1.2.3")
    assert peer_ip("2001:db8::7") == ipaddress.ip_address("2001:db8::7")
    assert peer_ip("fe80::1%2") is not None
    assert peer_ip("localhost:1000:1000:42") is None
    assert peer_ip("") is None
    assert ipc_uid("localhost:1000:100:42") == 1000
    assert ipc_uid("127.0.0.1") is None
    assert ipc_uid("localhost:x:1:2") is None


def _policy(allow=(), deny=()):
    return AddressPolicy.build(allow, deny, "allow", "deny")


@pytest.mark.parametrize(
    ("allow", "deny", "address", "refused"),
    [
        ((), (), "203.0.113.9", False),
        (("10.0.0.0/8",), (), "10.200.1.1", False),
        (("10.0.0.0/8",), (), "11.0.0.1", True),
        (("10.0.0.0/8",), (), "::ffff:10.0.0.1", False),  # IPv4 client on a dual-stack socket
        ((), ("192.168.0.0/16",), "192.168.4.4", True),
        ((), ("192.168.0.0/16",), "192.169.0.1", False),
        (("2001:db8::/32",), (), "2001:db8:1::5", False),
        (("2001:db8::/32",), (), "2001:db9::5", True),
        (("2001:db8::/32",), (), "10.0.0.1", True),  # an IPv6-only allow list refuses IPv4
        ((), ("2001:db8::/32",), "10.0.0.1", False),
        ((), ("::1",), "::1", True),
        (("127.0.0.1", "::1"), ("10.0.0.0/8",), "127.0.0.1", False),
        (("127.0.0.1",), ("10.0.0.0/8",), "10.0.0.1", True),
    ],
)
def test_address_policy(allow, deny, address, refused):
    ip = peer_ip(address)
    assert ip is not None
    assert (_policy(allow, deny).refuse(ip) is not None) is refused


@pytest.mark.parametrize(
    ("allow", "deny", "both"),
    [
        (("10.0.0.0/8",), ("10.1.0.0/16",), "10.1.0.0/16"),
        (("10.1.2.3",), ("10.0.0.0/8",), "10.1.2.3/32"),
        (("127.0.0.1",), ("127.0.0.1/32",), "127.0.0.1/32"),
        (("2001:db8::/32",), ("2001:db8:5::/48",), "2001:db8:5::/48"),
        (("::ffff:10.0.0.0/104",), ("10.9.0.0/16",), "10.9.0.0/16"),
    ],
)
def test_allow_and_deny_both_matching_is_refused(allow, deny, both):
    with pytest.raises(
        ConfigError, match=f"both match {both}: an address may be allowed or denied"
    ):
        _policy(allow, deny)


def test_ipv4_and_ipv6_ranges_never_overlap():
    _policy(("0.0.0.0/0",), ("::/0",))


# -- ZAP decisions --------------------------------------------------------------------------------


def _request(
    address="127.0.0.1", mechanism=b"NULL", *credentials, domain=DOMAIN, version=ZAP_VERSION
):
    return [version, b"7", domain, address.encode(), b"", mechanism, *credentials]


def test_zap_null_allowed_reply_shape():
    outcome = zap_decide(_request(), {DOMAIN: PortPolicy("frontend")})
    assert outcome.allowed
    assert outcome.reply == [ZAP_VERSION, b"7", ZAP_OK, b"OK", b"", b""]


def test_zap_null_from_denied_address():
    policies = {DOMAIN: PortPolicy("frontend", addresses=_policy(deny=("127.0.0.2",)))}
    outcome = zap_decide(_request("127.0.0.2"), policies)
    assert not outcome.allowed
    assert outcome.reply is not None
    assert outcome.reply[2] == ZAP_DENIED
    assert outcome.reason == "address 127.0.0.2 is denied"
    assert zap_decide(_request("127.0.0.1"), policies).allowed


def test_zap_curve_known_and_unknown_keys():
    known, unknown = os.urandom(32), os.urandom(32)
    policies = {DOMAIN: PortPolicy("frontend", curve=True, keys=frozenset({known}))}
    ok = zap_decide(_request("10.0.0.1", b"CURVE", known), policies)
    assert ok.allowed
    assert ok.user_id == encode_key(known)
    assert ok.reply is not None
    assert ok.reply[4] == encode_key(known).encode()  # User-Id: the client's Z85 public key
    bad = zap_decide(_request("10.0.0.1", b"CURVE", unknown), policies)
    assert not bad.allowed
    assert bad.reply is not None
    assert bad.reply[2:5] == [ZAP_DENIED, f"unknown CURVE key {encode_key(unknown)}".encode(), b""]


def test_zap_curve_allow_any_still_checks_addresses():
    policies = {
        DOMAIN: PortPolicy(
            "frontend", curve=True, allow_any=True, addresses=_policy(allow=("10.0.0.0/8",))
        )
    }
    assert zap_decide(_request("10.9.9.9", b"CURVE", os.urandom(32)), policies).allowed
    refused = zap_decide(_request("11.0.0.1", b"CURVE", os.urandom(32)), policies)
    assert not refused.allowed
    assert refused.reason == "address 11.0.0.1 is not in the allow list"


def test_zap_local_key_only_from_local_peers():
    local = os.urandom(32)
    policies = {
        DOMAIN: PortPolicy("backend", curve=True, local_keys=frozenset({local}), local_uids=None)
    }
    assert zap_decide(_request("localhost:0:0:5", b"CURVE", local), policies).allowed
    assert zap_decide(_request("", b"CURVE", local), policies).allowed  # ipc without credentials
    assert not zap_decide(_request("127.0.0.1", b"CURVE", local), policies).allowed


def test_zap_local_uid_check():
    policies = {DOMAIN: PortPolicy("backend", local_uids=frozenset({1000}))}
    assert zap_decide(_request("localhost:1000:1000:77"), policies).allowed
    other = zap_decide(_request("localhost:1001:1000:77"), policies)
    assert not other.allowed
    assert other.reason == "local peer runs as another user"
    assert not zap_decide(_request(""), policies).allowed  # no credentials: cannot vouch
    # TCP peers are not local: the uid rule does not apply, the address rules do.
    assert zap_decide(_request("192.0.2.1"), policies).allowed


@pytest.mark.parametrize(
    ("request_frames", "code", "reason"),
    [
        (_request(version=b"2.0"), ZAP_ERROR, "unsupported ZAP version"),
        (_request(domain=b"other"), ZAP_DENIED, "unknown ZAP domain b'other'"),
        (_request("127.0.0.1", b"PLAIN", b"user", b"pw"), ZAP_DENIED, "mechanism PLAIN refused"),
        (_request("127.0.0.1", b"CURVE", os.urandom(32)), ZAP_DENIED, "this port uses NULL"),
        (_request("not-an-address"), ZAP_DENIED, "unrecognised peer address"),
    ],
)
def test_zap_refusals(request_frames, code, reason):
    outcome = zap_decide(request_frames, {DOMAIN: PortPolicy("frontend")})
    assert not outcome.allowed
    assert outcome.reply is not None
    assert outcome.reply[:3] == [ZAP_VERSION, b"7", code]
    assert reason in outcome.reason


def test_zap_curve_port_refuses_null_and_bad_credentials():
    policies = {DOMAIN: PortPolicy("frontend", curve=True, allow_any=True)}
    assert "this port uses CURVE" in zap_decide(_request(), policies).reason
    assert zap_decide(_request("127.0.0.1", b"CURVE", b"short"), policies).reason == (
        "malformed CURVE credentials"
    )
    assert not zap_decide(_request("127.0.0.1", b"CURVE"), policies).allowed


def test_zap_malformed_request_gets_no_reply():
    outcome = zap_decide([b"1.0", b"7", DOMAIN], {DOMAIN: PortPolicy("frontend")})
    assert outcome.reply is None
    assert not outcome.allowed


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"curve_client_keys_dir": "/k"}, "curve_client_keys_dir is set but curve_secret_key_file"),
        ({"curve_allow_any": True}, "curve_allow_any is set but curve_secret_key_file"),
        ({"curve_secret_key_file": "/s"}, "needs curve_client_keys_dir .* or curve_allow_any"),
        (
            {"curve_secret_key_file": "/s", "curve_client_keys_dir": "/k", "curve_allow_any": True},
            "give one",
        ),
        ({"curve_worker_keys_dir": "/k"}, "curve_worker_keys_dir is set but"),
        (
            {"curve_backend_secret_key_file": "/s", "remote_workers": True},
            "needs curve_worker_keys_dir",
        ),
        (
            {"curve_backend_secret_key_file": "/s", "curve_worker_keys_dir": "/k"},
            "backend is not open to them: set remote_workers",
        ),
        ({"backend_allow": ["10.0.0.0/8"]}, "backend is not open to them"),
        ({"allow": ["10.0.0.0/8"], "deny": ["10.0.0.0/24"]}, "both match 10.0.0.0/24"),
        ({"deny": ["nonsense"]}, "deny: 'nonsense' is not an IP address"),
        ({"allow": 5}, "allow: expected a list of strings"),
        ({"zap_domain": ""}, "zap_domain: expected a non-empty name"),
        ({"handshake_timeout": 0}, "handshake_timeout: expected a positive number"),
        ({"remote_workers": "yes"}, "remote_workers: expected true or false"),
    ],
)
def test_security_options_are_checked_by_name(options, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_mapping(options)


def test_allow_lists_from_toml_list_or_env_string():
    assert Config.from_mapping({"allow": ["10.0.0.0/8", "::1"]}).allow == ("10.0.0.0/8", "::1")
    assert Config.from_mapping({"deny": "10.0.0.0/8, 192.0.2.1"}).deny == (
        "10.0.0.0/8",
        "192.0.2.1",
    )


def test_backend_is_private_unless_opened():
    assert Config().public_backend is None
    assert Config(remote_workers=True).public_backend == "tcp://*:6661"
    assert Config(backend="ipc:///tmp/b").public_backend == "ipc:///tmp/b"


def test_public_deployment_defaults():
    config = Config()
    assert config.handshake_timeout <= 10
    assert config.max_message_size == 1024 * 1024


# -- the driver's state (no sockets) --------------------------------------------------------------


def _secure_config(tmp_path: Path) -> tuple[Config, Path]:
    _, secret, _ = write_key_pair(tmp_path, "server")
    clients = tmp_path / "clients"
    clients.mkdir()
    config = Config(curve_secret_key_file=str(secret), curve_client_keys_dir=str(clients))
    return config, clients


def test_server_security_load_and_reload(tmp_path, caplog):
    config, clients = _secure_config(tmp_path)
    with caplog.at_level(logging.WARNING, "zmqserver.security"):
        security = ServerSecurity.load(config)
    assert "holds no *.key file" in caplog.text
    front = security.policies[security.frontend_domain]
    assert front.curve
    assert front.keys == frozenset()
    public_file, _, pair = write_key_pair(tmp_path, "alice")
    (clients / public_file.name).write_bytes(public_file.read_bytes())
    key = _raw(pair.public)
    assert not zap_decide(_request("1.2.3.4", b"CURVE", key), security.policies).allowed
    security.reload()
    assert zap_decide(_request("1.2.3.4", b"CURVE", key), security.policies).allowed
    # A broken directory on HUP keeps the keys already loaded.
    (clients / "broken.key").write_text("garbage")
    with caplog.at_level(logging.ERROR, "zmqserver.security"):
        security.reload()
    assert "keeping the client keys already loaded" in caplog.text
    assert zap_decide(_request("1.2.3.4", b"CURVE", key), security.policies).allowed


def test_server_security_backend_policy(tmp_path):
    _, secret, backend = write_key_pair(tmp_path, "backend")
    workers = tmp_path / "workers"
    workers.mkdir()
    security = ServerSecurity.load(
        Config(
            remote_workers=True,
            curve_backend_secret_key_file=str(secret),
            curve_worker_keys_dir=str(workers),
        )
    )
    creds = security.worker_credentials
    assert creds is not None
    assert creds.server_key == backend.public
    back = security.policies[security.backend_domain]
    assert back.curve
    assert back.local_keys == {_raw(creds.pair.public)}
    assert back.local_uids == {os.getuid()}
    # The forked workers' key is good over the private ipc socket only.
    uid = os.getuid()
    local = _request(
        f"localhost:{uid}:0:1", b"CURVE", _raw(creds.pair.public), domain=security.backend_domain
    )
    remote = _request(
        "192.0.2.1", b"CURVE", _raw(creds.pair.public), domain=security.backend_domain
    )
    assert zap_decide(local, security.policies).allowed
    assert not zap_decide(remote, security.policies).allowed


def test_default_security_has_no_curve_and_no_worker_keys():
    security = ServerSecurity.load(Config())
    assert security.worker_credentials is None
    assert security.public_backend is None
    assert not security.policies[security.frontend_domain].curve


def test_both_ports_go_through_zap_even_with_no_rule_to_check():
    # The ZAP domain is what makes libzmq drop connections that do not speak ZeroMQ (an HTTP
    # request would otherwise pass for a finished ZMTP 1.0 handshake): it is always set.
    security = ServerSecurity.load(Config())
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        for name, domain in (
            ("frontend", security.frontend_domain),
            ("backend", security.backend_domain),
        ):
            sock = ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            security.apply(sock, name)
            assert sock.getsockopt(zmq.ZAP_DOMAIN) == domain
            sock.close()
    finally:
        ctx.term()
    # With no rules the frontend admits every NULL peer, from any address.
    for address in ("127.0.0.1", "192.0.2.7", "2001:db8::1"):
        outcome = zap_decide(_request(address), security.policies)
        assert outcome.allowed, outcome.reason


def test_refusals_are_logged_once_a_minute_per_address(caplog):
    security = ServerSecurity.load(Config(deny=("192.0.2.0/24",)))
    with caplog.at_level(logging.WARNING, "zmqserver.security"):
        for _ in range(50):
            security._note(zap_decide(_request("192.0.2.1"), security.policies))
        security._note(zap_decide(_request("192.0.2.2"), security.policies))
    assert security.denied == 51
    assert caplog.text.count("refused a connection from 192.0.2.1") == 1
    assert caplog.text.count("refused a connection from 192.0.2.2") == 1


def test_stale_private_dirs_of_dead_masters_are_removed(tmp_path):
    child = subprocess.Popen(["true"])  # a pid that has surely exited (and was reaped)
    child.wait()
    stale = tmp_path / f"zmqserver-{child.pid}-abcd1234"
    live = tmp_path / f"zmqserver-{os.getpid()}-abcd1234"
    other = tmp_path / "zmqserver-notapid-x"
    for path in (stale, live, other):
        path.mkdir()
        (path / "workers").write_text("")
    remove_stale_dirs(tmp_path)
    assert not stale.exists()
    assert live.exists()
    assert other.exists()


def test_private_dir_is_named_after_the_master(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    security = ServerSecurity.load(Config())
    try:
        endpoint = security.local_endpoint()
        assert endpoint.startswith(f"ipc://{tmp_path}/zmqserver-{os.getpid()}-")
        assert endpoint.endswith("/workers")
        assert security.local_dir is not None
        assert stat.S_IMODE(security.local_dir.stat().st_mode) == 0o700
    finally:
        security.close()
    assert not list(tmp_path.iterdir())


# -- the policy is pure ---------------------------------------------------------------------------


def test_policy_encodes_keys_as_pyzmq_does():
    from zmq.utils import z85

    for _ in range(20):
        raw = os.urandom(32)
        assert encode_key(raw) == bytes(z85.encode(raw)).decode("ascii")


def test_policy_imports_neither_zmq_nor_the_config():
    import ast

    import zmqserver.security.policy as policy

    tree = ast.parse(Path(policy.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert not {name for name in imported if name.startswith("zmq") or "config" in name}
    assert {name for name in imported if name.startswith(".")} == {"..errors"}


def test_zap_admits_the_binary_star_peer_key_and_a_reload_of_the_directory_keeps_it():
    """A pair's peer key is admitted as a client's (its copy of our pub-sub map), apart from
    the key directory, so replacing the directory's keys (HUP) leaves it admitted."""
    client, peer, stranger = os.urandom(32), os.urandom(32), os.urandom(32)
    policy = PortPolicy("frontend", curve=True, keys=frozenset({client}))
    policy = dataclasses.replace(policy, peer_keys=frozenset({peer}))
    reloaded = dataclasses.replace(policy, keys=frozenset())
    for current in (policy, reloaded):
        policies = {DOMAIN: current}
        assert zap_decide(_request("10.0.0.1", b"CURVE", peer), policies).allowed
        assert not zap_decide(_request("10.0.0.1", b"CURVE", stranger), policies).allowed
    assert not zap_decide(_request("10.0.0.1", b"CURVE", client), {DOMAIN: reloaded}).allowed


def test_handle_zap_says_whether_it_found_the_socket_empty():
    """The loop waits on the ZAP socket's ZMQ_FD, which signals again only after a read found
    the socket empty: handle_zap says when it stopped at its batch instead (come back at
    once), and answers every request either way. Real sockets, no server: a DEALER plays the
    libzmq peers asking."""
    from zmqserver.security.zap import ZAP_BATCH, ZAP_ENDPOINT

    ctx = zmq.Context()
    security = ServerSecurity.load(Config())
    try:
        security.start(ctx)
        asker = ctx.socket(zmq.DEALER)
        asker.connect(ZAP_ENDPOINT)
        count = ZAP_BATCH + 10
        for n in range(count):
            asker.send_multipart([b"", ZAP_VERSION, b"%d" % n, b"", b"127.0.0.1", b"", b"NULL"])
        assert security.zap_socket is not None
        assert security.zap_socket.poll(1000)  # they have arrived
        assert security.handle_zap() is False  # a full batch: more wait
        assert security.handle_zap() is True  # the rest, then empty
        replies = 0
        while asker.poll(0):
            asker.recv_multipart()
            replies += 1
        assert replies == count
        asker.close(0)
    finally:
        security.close()
        ctx.term()
