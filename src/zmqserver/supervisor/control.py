"""The control endpoint: a ROUTER in the master that answers `zmqserver status` and
`zmqserver control` (JSON requests, JSON replies; commands.py says what each does).

Rule 1: a component (component.py) and nothing more. It reads requests, hands them to
:func:`~.commands.execute` inside the master's loop (one command path with the signals), and
sends each reply before it returns.

Where it listens: by default ``ipc://`` in the broker's private 0700 directory (the one local
workers connect to), so only local users who may enter that directory reach it, and the ZAP
handler checks each peer's uid too (root's and the server's own). With ``control_endpoint``
``tcp://...`` it speaks CURVE only, with the server's key pair, and admits the client keys in
``control_keys_dir`` (validated in config/validate.py). Either way every action is logged with
who asked: the peer's uid and pid for ipc (libzmq's ``Peer-Address`` message property,
``localhost:UID:GID:PID``, from SO_PEERCRED), the CURVE key and IP address for tcp.

How `zmqserver status` finds it: the endpoint and the master's pid are written to a small JSON
file (:func:`discovery_files`): next to the pid file (``PIDFILE.control``) when there is one,
and always in a per-user runtime directory, keyed by the frontend endpoint. Both are removed at
exit; a file left by a killed server names a pid that is gone, which status reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from .._discovery import discovery_files, runtime_dir
from .._process import Credentials
from ..config import Config
from ..security.keys import load_key_dir
from ..security.policy import PortPolicy
from ..security.sockets import apply_server
from .commands import execute
from .component import Handle, Host, StartError, WatchItem
from .fdwatch import FdWatch

if TYPE_CHECKING:
    from .broker_side import BrokerComponent
    from .master import Master

log = logging.getLogger("zmqserver")

#: Largest request read (a command is a few dozen bytes): more is refused unread.
MAX_REQUEST = 64 * 1024
#: Requests answered per turn at most, so a flood cannot hold the loop.
BATCH = 64
#: The socket's name in the private directory.
SOCKET_NAME = "control"


def who_asked(frame: zmq.Frame) -> str:
    """The peer of a request, as the log names it."""
    try:
        address = str(frame.get("Peer-Address"))
    except zmq.ZMQError:
        address = ""
    parts = address.split(":")
    if len(parts) == 4 and parts[1].isdigit():  # ipc: localhost:UID:GID:PID
        return f"uid {parts[1]} (pid {parts[3]})"
    try:
        key = str(frame.get("User-Id"))
    except zmq.ZMQError:
        key = ""
    if key:
        return f"key {key} from {address or '?'}"
    return address or "a local peer"


class ControlComponent:
    """The control ROUTER, in the broker's ZeroMQ context (so its ZAP handler checks peers)."""

    def __init__(self, config: Config, broker: BrokerComponent) -> None:
        self.broker = broker
        self.sock: zmq.Socket[bytes] | None = None
        #: The socket, waited on by its ZMQ_FD (fdwatch.py: asked a few times a minute).
        self._watch: FdWatch | None = None
        self.master: Master | None = None
        self.endpoint = ""
        self.path: str | None = None
        self.written: list[Path] = []
        self._policy_domain = f"{config.zap_domain}.control".encode()

    # -- Component --------------------------------------------------------------------------------

    def open(self, host: Host) -> None:
        from .master import Master

        assert isinstance(host, Master)
        self.master = host
        config = host.config
        broker = self.broker
        security = broker.security
        assert broker.ctx is not None
        wanted = config.control_endpoint
        if wanted is None:
            local = security.local_endpoint()  # made by the broker already: the private dir
            wanted = local.rsplit("/", 1)[0] + "/" + SOCKET_NAME
        remote = not wanted.startswith("ipc://")
        if remote:
            assert config.control_keys_dir is not None  # validate.py
            try:
                keys = load_key_dir(config.control_keys_dir, "control_keys_dir")
            except Exception as exc:
                raise StartError(f"cannot load control keys: {exc}") from exc
            policy = PortPolicy("control", curve=True, keys=keys)
        else:
            policy = PortPolicy("control", local_uids=frozenset({os.getuid(), 0}))
        security.policies[self._policy_domain] = policy
        sock = broker.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        apply_server(
            sock,
            keys=security.frontend_keys if remote else None,
            zap_domain=self._policy_domain,
            handshake_timeout=config.handshake_timeout,
        )
        try:
            sock.bind(wanted)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise StartError(f"cannot bind the control endpoint {wanted}: {exc}") from exc
        self.sock = sock
        self._watch = FdWatch(sock)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.path = self.endpoint[len("ipc://") :] if not remote else None
        self._write_discovery(config, host.pid)
        log.info("control endpoint on %s", self.endpoint)

    def watch(self) -> list[WatchItem]:
        return [] if self._watch is None else [self._watch.item()]

    def next_deadline(self) -> float:
        return float("inf") if self._watch is None else self._watch.next_deadline()

    def handle(self, ready: Collection[Handle], now: float) -> None:
        watch = self._watch
        if watch is not None and watch.due(ready):
            watch.read(self._answer(watch.sock))

    def _answer(self, sock: zmq.Socket[bytes]) -> bool:
        """Answer up to BATCH requests; True once a read found the socket empty."""
        assert self.master is not None
        for _ in range(BATCH):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            if len(parts) < 2:
                continue
            peer, body = parts[0].bytes, parts[-1]
            who = who_asked(body)
            try:
                request: Any = json.loads(body.bytes)
            except ValueError as exc:
                reply: dict[str, Any] = {"ok": False, "error": f"not JSON: {exc}"}
            else:
                reply = execute(self.master, request, who)
            envelope = [peer, b""] if len(parts) > 2 and not parts[-2].bytes else [peer]
            # The asker may be gone or not reading: nothing to wait for.
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart([*envelope, json.dumps(reply).encode()], zmq.NOBLOCK)
        return False

    def on_stop(self, graceful: bool) -> None:
        pass  # still answers status while the workers finish

    def on_reload(self) -> None:
        pass

    def on_config(self, config: Config) -> None:
        pass

    def owned_paths(self) -> list[str]:
        return [] if self.path is None else [self.path]

    def admit_user(self, creds: Credentials) -> None:
        security = self.broker.security
        policy = security.policies.get(self._policy_domain)
        if policy is not None and policy.local_uids is not None:
            uids = policy.local_uids | {creds.uid}
            security.policies[self._policy_domain] = PortPolicy(
                policy.port, curve=policy.curve, keys=policy.keys, local_uids=uids
            )
        for path in self.written:
            with contextlib.suppress(OSError):
                os.chown(path, creds.uid, creds.gid)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
            self._watch = None
        for path in self.written:
            try:
                if json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()
            except (OSError, ValueError):
                pass
        self.written = []

    # -- discovery --------------------------------------------------------------------------------

    def _write_discovery(self, config: Config, pid: int) -> None:
        text = json.dumps({"pid": pid, "endpoint": self.endpoint}) + "\n"
        for path in discovery_files(config):
            try:
                if path.parent == runtime_dir():
                    path.parent.mkdir(mode=0o700, exist_ok=True)
                tmp = path.with_name(path.name + f".{pid}.tmp")
                tmp.write_text(text)
                os.replace(tmp, path)
                self.written.append(path)
            except OSError as exc:
                log.warning("cannot write the control endpoint to %s: %s", path, exc)
