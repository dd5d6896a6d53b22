"""The ZAP driver: one ZAP handler socket in the master's event loop, and the private worker socket.

:class:`ServerSecurity` is the thin I/O shell around the pure policy (policy.py): it reads the
key files the options name (keys.py), binds the ZAP handler, sets the broker ROUTERs' options
(sockets.py), and answers each ZAP request with :func:`~.policy.zap_decide`.

Why the event loop and not pyzmq's ``ThreadAuthenticator``: the loop already sleeps in
``zmq_poll``; one more socket costs nothing, and a policy that only the loop thread reads needs no
lock when HUP swaps it. A ZAP request waits at most one loop turn, and the loop never blocks on
anything but the poll.

How libzmq uses this (4.3): a server socket with ``curve_server`` asks the ZAP handler bound at
``inproc://zeromq.zap.01`` in the *same context* about every CURVE handshake; for the NULL
mechanism it asks only if the socket has a ``zap_domain``, so both broker ROUTERs always have
one (:meth:`ServerSecurity.apply` says why: it is also what makes libzmq drop connections that do
not speak ZeroMQ). The request carries the domain (which of our sockets), the peer's address (an
IP for TCP; ``localhost:UID:GID:PID`` for ``ipc://`` on Linux) and, for CURVE, the client's
long-term public key, already proven by the handshake. A 200 reply admits the connection and its
User-Id (here: the client's Z85 public key) is attached to every message read from it; anything
else closes the connection before a single message reaches the broker. ``ZAP_ENFORCE_DOMAIN``
makes a missing handler refuse connections rather than admit them.

The options arrive already checked (zmqserver.config.validate checks their combination where a
config is built); this module reads only the option values it needs (:class:`SecurityOptions`)
and never imports the config package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

import zmq

from ..errors import ConfigError
from .keys import KeyPair, decode_key, load_key_dir, load_secret_key
from .policy import AddressPolicy, PortPolicy, ZapOutcome, zap_decide
from .sockets import ClientCredentials, apply_server

# The name the log (and the docs) have always used, whatever module logs it.
log = logging.getLogger("zmqserver.security")

#: Where libzmq sends ZAP requests (RFC 27): fixed by the spec, one handler per context.
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: The ipc:// endpoint local workers use, inside a private directory of its own.
LOCAL_SOCKET = "workers"
#: Longest usable ipc:// path: a sockaddr_un path holds 107 bytes plus the NUL.
_MAX_IPC_PATH = 107
#: A refusal is logged once per (port, address, reason) in this many seconds: a refused CURVE
#: client reconnects every 100 ms by default and must not flood the log.
DENIAL_LOG_INTERVAL = 60.0
_THROTTLE_ENTRIES = 4096
#: ZAP requests answered per wake-up before the loop looks at its other sockets.
ZAP_BATCH = 256


class SecurityOptions(Protocol):
    """The options :class:`ServerSecurity` reads; a :class:`zmqserver.config.Config` has them.

    Described by shape rather than imported, so that security depends on no config module
    (the config's checks depend on security's policy, not the other way round).
    """

    @property
    def curve_secret_key_file(self) -> str | None: ...
    @property
    def curve_backend_secret_key_file(self) -> str | None: ...
    @property
    def curve_client_keys_dir(self) -> str | None: ...
    @property
    def curve_worker_keys_dir(self) -> str | None: ...
    @property
    def curve_allow_any(self) -> bool: ...
    @property
    def allow(self) -> tuple[str, ...]: ...
    @property
    def deny(self) -> tuple[str, ...]: ...
    @property
    def backend_allow(self) -> tuple[str, ...]: ...
    @property
    def backend_deny(self) -> tuple[str, ...]: ...
    @property
    def zap_domain(self) -> str: ...
    @property
    def handshake_timeout(self) -> float: ...
    @property
    def public_backend(self) -> str | None: ...


def remove_stale_dirs(base: Path) -> None:
    """Remove private worker directories left by masters that died without cleaning up (SIGKILL).

    Only directories named ``zmqserver-<pid>-*``, owned by this user, whose pid is not running:
    never another user's, never a live server's (a reused pid just leaves a directory behind).
    """
    uid = os.getuid()
    for path in base.glob("zmqserver-*-*"):
        pid = path.name.split("-")[1]
        try:
            if not pid.isdigit() or path.lstat().st_uid != uid or not path.is_dir():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # gone already, or a pid we may not signal: not ours to judge
            continue


class ServerSecurity:
    """The broker's security: keys, the private worker socket, and the ZAP handler socket.

    Life cycle, all in the master: :meth:`load` (start-up: reads and checks every key file),
    :meth:`start` (binds the ZAP handler; before any server socket binds), :meth:`apply` for each
    ROUTER before it binds, :meth:`handle_zap` when the ZAP socket is readable, :meth:`reload` on
    HUP, :meth:`close` at exit.
    """

    def __init__(
        self,
        config: SecurityOptions,
        *,
        frontend_keys: KeyPair | None = None,
        backend_keys: KeyPair | None = None,
        client_keys: frozenset[bytes] = frozenset(),
        worker_keys: frozenset[bytes] = frozenset(),
    ) -> None:
        self.config = config
        self.frontend_keys = frontend_keys
        self.backend_keys = backend_keys
        self.public_backend = config.public_backend
        front_addresses = AddressPolicy.build(config.allow, config.deny, "allow", "deny")
        back_addresses = AddressPolicy.build(
            config.backend_allow, config.backend_deny, "backend_allow", "backend_deny"
        )
        #: Keys for the forked workers when the backend speaks CURVE: made in the master before
        #: any fork, inherited by the children, never written anywhere.
        self.worker_credentials: ClientCredentials | None = None
        local_keys: frozenset[bytes] = frozenset()
        if backend_keys is not None:
            self.worker_credentials = ClientCredentials.ephemeral(backend_keys.public)
            local_keys = frozenset({decode_key(self.worker_credentials.pair.public, "local")})
        self.frontend_domain = config.zap_domain.encode()
        self.backend_domain = f"{config.zap_domain}.workers".encode()
        self.local_uids = {os.getuid()}
        self.policies: dict[bytes, PortPolicy] = {
            self.frontend_domain: PortPolicy(
                "frontend",
                curve=frontend_keys is not None,
                allow_any=config.curve_allow_any,
                keys=client_keys,
                addresses=front_addresses,
            ),
            self.backend_domain: PortPolicy(
                "backend",
                curve=backend_keys is not None,
                keys=worker_keys,
                local_keys=local_keys,
                addresses=back_addresses,
                local_uids=frozenset(self.local_uids),
            ),
        }
        self.zap_socket: zmq.Socket[bytes] | None = None
        self.local_dir: Path | None = None
        self.allowed = 0
        self.denied = 0
        # (port, address) -> [when last logged, refusals not logged since]
        self._logged: dict[tuple[str, str], list[float]] = {}

    @classmethod
    def load(cls, config: SecurityOptions) -> ServerSecurity:
        """Read and check every key file the config names; ``ConfigError`` names what is wrong.

        The combination of options was checked where the config was built (config/validate.py).
        """
        frontend_keys = backend_keys = None
        client_keys: frozenset[bytes] = frozenset()
        worker_keys: frozenset[bytes] = frozenset()
        if config.curve_secret_key_file is not None:
            frontend_keys = load_secret_key(config.curve_secret_key_file, "curve_secret_key_file")
        if config.curve_backend_secret_key_file is not None:
            backend_keys = load_secret_key(
                config.curve_backend_secret_key_file, "curve_backend_secret_key_file"
            )
        if config.curve_client_keys_dir is not None:
            client_keys = load_key_dir(config.curve_client_keys_dir, "curve_client_keys_dir")
            if not client_keys:
                log.warning(
                    "curve_client_keys_dir %s holds no *.key file: no client can connect until "
                    "one is added (then send HUP)",
                    config.curve_client_keys_dir,
                )
        if config.curve_worker_keys_dir is not None:
            worker_keys = load_key_dir(config.curve_worker_keys_dir, "curve_worker_keys_dir")
        return cls(
            config,
            frontend_keys=frontend_keys,
            backend_keys=backend_keys,
            client_keys=client_keys,
            worker_keys=worker_keys,
        )

    # -- start-up --

    def start(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        """Bind the ZAP handler in ``ctx``; must happen before any server socket binds.

        A ROUTER rather than the REP of RFC 27's examples: a REP that failed to answer one request
        would never receive the next, and every later handshake would hang until its timeout.
        """
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(ZAP_ENDPOINT)
        self.zap_socket = sock
        if self.public_backend is not None and self.backend_keys is None:
            log.warning(
                "the backend %s takes workers without CURVE: anyone who can reach it can register "
                "as a worker and read jobs (see docs/security.md)",
                self.public_backend,
            )

    def apply(self, sock: zmq.Socket[bytes], name: str) -> None:
        """Set the options of the broker's ``"frontend"`` or ``"backend"`` ROUTER, before bind."""
        timeout = self.config.handshake_timeout
        # Both ports always go through ZAP, even with no rule to check (the frontend's policy
        # then admits every NULL peer): without a ZAP domain libzmq takes any bytes that do not
        # start like a ZMTP 3 greeting (an HTTP request, a TLS hello, noise) for a ZMTP 1.0
        # peer whose handshake is already over, so handshake_timeout never drops it and it holds
        # one of the broker's fds until the other side hangs up. With a domain, libzmq refuses
        # ZMTP 1.0 and 2.0 peers outright (CVE-2014-9721). The cost is one inproc round trip per
        # handshake, never per message. The backend's ZAP also checks that local peers run as our
        # user, whatever the directory permissions say.
        if name == "frontend":
            apply_server(
                sock,
                keys=self.frontend_keys,
                zap_domain=self.frontend_domain,
                handshake_timeout=timeout,
            )
        elif name == "backend":
            apply_server(
                sock,
                keys=self.backend_keys,
                zap_domain=self.backend_domain,
                handshake_timeout=timeout,
            )
        else:
            raise ValueError(f"unknown broker socket {name!r}")

    def local_endpoint(self) -> str:
        """The ipc:// endpoint of the private worker socket, in a new 0700 directory."""
        if self.local_dir is None:
            base = tempfile.gettempdir()
            if len(base) > _MAX_IPC_PATH - 40:
                base = "/tmp"  # a long TMPDIR would not fit in a socket path
            remove_stale_dirs(Path(base))
            prefix = f"zmqserver-{os.getpid()}-"
            self.local_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
            os.chmod(self.local_dir, 0o700)  # mkdtemp's mode, made explicit
        return f"ipc://{self.local_dir / LOCAL_SOCKET}"

    def bind_local(self, sock: zmq.Socket[bytes]) -> str:
        """Also bind the backend ``sock`` to the private worker socket; return its endpoint."""
        endpoint = self.local_endpoint()
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            message = f"cannot bind the local workers' socket {endpoint}: {exc}"
            raise OSError(exc.errno, message) from exc
        return endpoint

    def admit_local_user(self, uid: int, gid: int = -1) -> None:
        """Let local workers running as ``uid`` in (after a privilege drop to that user)."""
        self.local_uids.add(uid)
        policy = self.policies[self.backend_domain]
        self.policies[self.backend_domain] = dataclasses.replace(
            policy, local_uids=frozenset(self.local_uids)
        )
        if self.local_dir is not None:
            os.chown(self.local_dir, uid, gid)

    # -- the event loop's part --

    def handle_zap(self) -> bool:
        """Answer the ZAP requests waiting on the handler socket (called when it is readable);
        True once a read found it empty, False if :data:`ZAP_BATCH` were answered and more may
        wait (the caller comes back at once: the event loop watches the socket's ZMQ_FD, which
        signals again only after a read has found the socket empty)."""
        sock = self.zap_socket
        assert sock is not None
        for _ in range(ZAP_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            # ROUTER envelope: the requester's routing id, then (REQ-style) an empty delimiter.
            try:
                split = frames.index(b"") + 1
            except ValueError:
                continue
            outcome = zap_decide(frames[split:], self.policies)
            self._note(outcome)
            if outcome.reply is not None:
                with contextlib.suppress(zmq.Again):  # the handshake then times out instead
                    sock.send_multipart([*frames[:split], *outcome.reply], zmq.NOBLOCK)
        return False

    def _note(self, outcome: ZapOutcome) -> None:
        if outcome.allowed:
            self.allowed += 1
            log.debug(
                "%s: admitted %s %s", outcome.port, outcome.address or "local peer", outcome.user_id
            )
            return
        self.denied += 1
        now = time.monotonic()
        # Per address, not per reason: a peer trying a new key each time must not flood the log.
        key = (outcome.port, outcome.address)
        entry = self._logged.get(key)
        if entry is not None and now - entry[0] < DENIAL_LOG_INTERVAL:
            entry[1] += 1
            return
        if len(self._logged) >= _THROTTLE_ENTRIES:
            self._logged.clear()
        quiet = int(entry[1]) if entry is not None else 0
        self._logged[key] = [now, 0]
        log.warning(
            "%s: refused a connection from %s: %s%s",
            outcome.port,
            outcome.address or "a local peer",
            outcome.reason,
            f" ({quiet} more refused since the last report)" if quiet else "",
        )

    def reload(self) -> None:
        """Re-read the key directories (on HUP). A bad directory keeps the keys already loaded."""
        config = self.config
        for name, domain, what in (
            ("curve_client_keys_dir", self.frontend_domain, "client"),
            ("curve_worker_keys_dir", self.backend_domain, "worker"),
        ):
            directory = getattr(config, name)
            if directory is None:
                continue
            try:
                keys = load_key_dir(directory, name)
            except (ConfigError, OSError) as exc:
                log.error("HUP: keeping the %s keys already loaded: %s", what, exc)
                continue
            self.policies[domain] = dataclasses.replace(self.policies[domain], keys=keys)
            log.info("HUP: %d %s key(s) loaded from %s", len(keys), what, directory)

    def close(self) -> None:
        """Close the ZAP socket (before the context terminates) and remove the private directory."""
        if self.zap_socket is not None:
            self.zap_socket.close(linger=0)
            self.zap_socket = None
        if self.local_dir is not None:
            shutil.rmtree(self.local_dir, ignore_errors=True)
            self.local_dir = None
