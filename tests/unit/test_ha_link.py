"""The Binary Star peer link's security (supervisor/ha_link.py), without servers.

What each of libzmq's handshake events means for the pair (a pure function), the options'
checks (half a CURVE configuration is refused at start-up), ``ha_peer_key`` in both its forms,
and the ZAP policy the link gets: only the peer's key, and the frontend's allow/deny lists.
The same on real pairs: tests/integration/test_ha_security.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import zmq

from zmqserver.config import Config
from zmqserver.errors import ConfigError
from zmqserver.security import ServerSecurity, encode_key, write_key_pair, zap_decide
from zmqserver.supervisor.ha_link import PeerLinkSecurity, explain, load_peer_key

PAIR = {"ha_role": "backup", "ha_bind": "tcp://*:6690", "ha_peer": "tcp://a:6690"}
MISMATCH = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
FAILED_PROTOCOL = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for name in ("me", "peer", "stranger"):
        write_key_pair(tmp_path, name)
    clients = tmp_path / "clients"
    clients.mkdir()
    return tmp_path


def curve(keys: Path, **more: object) -> dict[str, object]:
    return {
        **PAIR,
        "curve_secret_key_file": str(keys / "me.key_secret"),
        "curve_client_keys_dir": str(keys / "clients"),
        **more,
    }


# -- what the log says --------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["sub", "pub"])
@pytest.mark.parametrize("with_curve", [True, False])
def test_one_server_with_curve_and_one_without_is_named_on_both_sides(side, with_curve):
    level, text = explain(side, FAILED_PROTOCOL, MISMATCH, with_curve) or (0, "")
    assert level == logging.ERROR
    assert "one server of the pair runs with CURVE" in text


def test_a_refusal_by_the_peer_names_both_possible_causes():
    level, text = explain("sub", zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, True) or (0, "")
    assert level == logging.ERROR
    assert "ZAP status 400" in text
    assert "ha_peer_key" in text
    assert "allow/deny" in text


def test_our_wrong_peer_key_and_theirs_are_told_apart():
    ours = explain("sub", zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, True)
    theirs = explain("pub", FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC, True)
    assert ours is not None
    assert theirs is not None
    assert "this server's ha_peer_key is not" in ours[1]
    assert "the peer's ha_peer_key must be this server's public key" in theirs[1]


def test_a_strangers_failed_handshake_is_a_warning_and_success_is_silent():
    stranger = explain("pub", zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, False)
    assert stranger is not None
    assert stranger[0] == logging.WARNING
    assert explain("sub", zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, True) is None


# -- the options ----------------------------------------------------------------------------------


def test_a_pair_with_curve_needs_the_peers_key(keys):
    with pytest.raises(ConfigError, match="set ha_peer_key to the peer's public key"):
        Config.from_mapping(curve(keys))


def test_a_peer_key_without_curve_is_half_a_configuration(keys):
    with pytest.raises(ConfigError, match="ha_peer_key is set but curve_secret_key_file is not"):
        Config.from_mapping({**PAIR, "ha_peer_key": str(keys / "peer.key")})
    with pytest.raises(ConfigError, match="ha_peer_key is set but ha_role is not"):
        Config.from_mapping({"ha_peer_key": str(keys / "peer.key")})


def test_the_peer_key_is_a_key_file_or_its_z85_text(keys):
    from_file = load_peer_key(str(keys / "peer.key"))
    assert from_file is not None
    assert load_peer_key(encode_key(from_file)) == from_file
    with pytest.raises(ConfigError, match="ha_peer_key: .* is neither a CURVE public key"):
        load_peer_key(str(keys / "nope.key"))
    with pytest.raises(ConfigError, match="ha_peer_key"):
        load_peer_key("x" * 39 + "~")  # 40 characters, not Z85
    with pytest.raises(ConfigError, match="holds a secret key: give the peer's public key"):
        load_peer_key(str(keys / "peer.key_secret"))


@pytest.mark.parametrize(
    ("more", "message"),
    [
        ({"ha_bind": "tcp://*:notaport"}, "ha_bind: 'tcp://[*]:notaport' has no port number"),
        ({"ha_peer": "tcp://*:6690"}, "ha_peer: .* needs its host name or address, not [*]"),
        ({"ha_peer": "tcp://127.0.0.1:6690"}, "is this server's own ha_bind"),
        ({"ha_bind": "ipc:///tmp/a", "ha_peer": "ipc:///tmp/a"}, "is this server's own ha_bind"),
        ({"ha_bind": "tcp://*:6660"}, "ha_bind: port 6660 is also frontend's"),
        ({"ha_bind": "tcp://*:9100", "metrics_port": 9100}, "port 9100 is also metrics_port's"),
        ({"ha_bind": "tcp://*:6681", "pubsub_port": 6680}, "port 6681 is also pubsub_port"),
        (
            {"pubsub_port": 6680, "ha_peer_pubsub": "tcp://*:7680"},
            "ha_peer_pubsub: .* not [*]",
        ),
        (
            {"pubsub_port": 6680, "ha_peer_pubsub": "tcp://127.0.0.1:6680"},
            "is this server's own pub-sub port",
        ),
    ],
)
def test_pair_endpoints_that_cannot_work_are_refused_at_start_up(more, message):
    """What libzmq would refuse only when the server opens it (a traceback, or a server that
    talks to itself forever) is a ConfigError naming the option, for serve and check alike."""
    with pytest.raises(ConfigError, match=message):
        Config.from_mapping({**PAIR, **more})
    Config.from_mapping({**PAIR, "ha_peer": "tcp://127.0.0.1:6691"})  # another port: fine


# -- the ZAP policy of the link -----------------------------------------------------------------


def _zap(link: PeerLinkSecurity, address: str, key: bytes | None) -> bool:
    mechanism, credentials = (b"NULL", []) if key is None else (b"CURVE", [key])
    request = [b"1.0", b"1", link.domain, address.encode(), b"", mechanism, *credentials]
    return zap_decide(request, link.security.policies).allowed


def test_with_curve_the_link_admits_the_peers_key_alone(keys):
    config = Config.from_mapping(curve(keys, ha_peer_key=str(keys / "peer.key")))
    link = PeerLinkSecurity(config, ServerSecurity.load(config))
    pub = zmq.Context.instance().socket(zmq.PUB)
    try:
        link.secure_pub(pub)
        assert link.curve
        peer = load_peer_key(str(keys / "peer.key"))
        stranger = load_peer_key(str(keys / "stranger.key"))
        assert _zap(link, "10.0.0.2", peer)
        assert not _zap(link, "10.0.0.2", stranger)
        assert not _zap(link, "10.0.0.2", None)  # a server without CURVE
    finally:
        link.close()
        pub.close(linger=0)
    assert link.domain not in link.security.policies  # closed: no policy left behind


@pytest.mark.parametrize(
    ("lists", "refused"),
    [({"allow": ["10.0.0.0/8"]}, "192.168.1.2"), ({"deny": ["10.9.0.0/16"]}, "10.9.0.2")],
)
def test_the_frontends_allow_and_deny_lists_apply_to_the_link(lists, refused):
    config = Config.from_mapping({**PAIR, **lists})
    link = PeerLinkSecurity(config, ServerSecurity.load(config))
    pub = zmq.Context.instance().socket(zmq.PUB)
    try:
        link.secure_pub(pub)
        assert not link.curve
        assert _zap(link, "10.0.0.2", None)
        assert not _zap(link, refused, None)
    finally:
        link.close()
        pub.close(linger=0)
