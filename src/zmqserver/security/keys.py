"""CURVE key files: reading and checking them, and making new ones (``zmqserver keygen``).

Everything here runs at start-up or on HUP, never per connection: a bad file stops the server with
a :class:`~zmqserver.errors.ConfigError` that names the option and the file, before anything binds.
The keys read here become the frozen policy of policy.py; the files are the czmq/pyzmq
certificate format, so either tool reads what keygen writes.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from ..errors import ConfigError
from .policy import KEY_BYTES, encode_key

__all__ = [
    "KEY_BYTES",
    "KEY_Z85",
    "KeyPair",
    "decode_key",
    "encode_key",
    "load_key_dir",
    "load_public_key",
    "load_secret_key",
    "write_key_pair",
]

KEY_Z85 = 40
_Z85_ALPHABET = frozenset(z85.Z85CHARS)


def decode_key(text: bytes | str, what: str) -> bytes:
    """The 32 raw bytes of a Z85-encoded CURVE key; ``ConfigError`` naming ``what`` if not one."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if len(data) != KEY_Z85:
        raise ConfigError(
            f"{what}: a CURVE key is {KEY_Z85} Z85 characters ({KEY_BYTES} bytes), "
            f"got {len(data)} characters"
        )
    if not set(data) <= _Z85_ALPHABET:
        raise ConfigError(f"{what}: not a Z85-encoded CURVE key (characters outside Z85)")
    try:
        raw = z85.decode(data)
    except (ValueError, KeyError, OverflowError, struct.error) as exc:
        raise ConfigError(f"{what}: not a Z85-encoded CURVE key ({exc})") from None
    return bytes(raw)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair, both halves Z85-encoded (40 ASCII bytes each)."""

    public: bytes
    secret: bytes = dataclasses.field(repr=False)

    @classmethod
    def generate(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(bytes(public), bytes(secret))


def _check_private(path: Path, what: str) -> None:
    """Refuse a secret key file that other users can read or write."""
    mode = path.stat().st_mode
    if mode & 0o007:  # any permission for "other"; a group may be trusted on purpose
        raise ConfigError(
            f"{what}: {path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"a secret key must be private: chmod 600 {path}"
        )


def _read_certificate(path: Path, what: str) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise ConfigError(f"{what}: {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what}: {path} is not a file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what}: cannot read a CURVE certificate from {path}: {exc}") from None
    return public, secret


def load_secret_key(path: str | os.PathLike[str], what: str) -> KeyPair:
    """Read a secret certificate (``zmqserver keygen``'s ``.key_secret``) and check it.

    Refused, each with a message naming ``what`` and the file: a missing file, one readable by
    other users, a file without a ``secret-key`` (the public half given by mistake), keys that are
    not 40 Z85 characters, and a public key that does not belong to the secret key.
    """
    file = Path(path).expanduser()
    public, secret = _read_certificate(file, what)
    if secret is None:
        raise ConfigError(
            f"{what}: {file} has no secret-key (is it the public .key file? "
            "give the .key_secret file)"
        )
    _check_private(file, what)
    decode_key(public, f"{what}: {file}: public-key")
    decode_key(secret, f"{what}: {file}: secret-key")
    if bytes(zmq.curve_public(secret)) != bytes(public):
        raise ConfigError(f"{what}: {file}: the public-key does not belong to the secret-key")
    return KeyPair(bytes(public), bytes(secret))


def load_public_key(path: str | os.PathLike[str], what: str) -> bytes:
    """The raw 32 bytes of the public key in a certificate file (public or secret)."""
    file = Path(path).expanduser()
    public, _ = _read_certificate(file, what)
    return decode_key(public, f"{what}: {file}: public-key")


def load_key_dir(path: str | os.PathLike[str], what: str) -> frozenset[bytes]:
    """The public keys of every ``*.key`` file in a directory (the czmq/pyzmq convention).

    The directory must not be writable by other users: whoever can add a file there can let
    themselves in. One bad file refuses the whole directory rather than silently skipping a key
    the operator thinks is allowed.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"{what}: {directory} is not a directory")
    if directory.stat().st_mode & stat.S_IWOTH:
        raise ConfigError(
            f"{what}: {directory} is writable by every user, who could add their own key: "
            f"chmod o-w {directory}"
        )
    keys = set()
    for file in sorted(directory.glob("*.key")):
        if file.stat().st_mode & stat.S_IWOTH:
            raise ConfigError(f"{what}: {file} is writable by every user: chmod o-w {file}")
        keys.add(load_public_key(file, what))
    return frozenset(keys)


_SECRET_BANNER = """\
#   ****  Generated on {now} by zmqserver keygen  ****
#   ZeroMQ CURVE **Secret** Certificate
#   Keep this file private (mode 0600). Give others the .key file, never this one.

"""
_PUBLIC_BANNER = """\
#   ****  Generated on {now} by zmqserver keygen  ****
#   ZeroMQ CURVE Public Certificate
#   Give this file to the peers that must recognise this key (e.g. the server's
#   curve_client_keys_dir); check its contents when it changes hands.

"""


def _certificate(banner: str, pair: KeyPair, with_secret: bool) -> bytes:
    # The ZPL certificate layout of czmq's zcert and pyzmq's zmq.auth.create_certificates, so
    # either tool (and zmq.auth.load_certificate) reads what keygen writes.
    now = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    lines = [banner.format(now=now), "metadata\n", "curve\n"]
    lines.append(f'    public-key = "{pair.public.decode()}"\n')
    if with_secret:
        lines.append(f'    secret-key = "{pair.secret.decode()}"\n')
    return "".join(lines).encode()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key (a deployed key replaced by accident locks everyone out), and
    # the mode is set at creation, so the secret is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_key_pair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path, KeyPair]:
    """Create ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) in ``directory``.

    Raises :class:`FileExistsError` rather than overwrite either file, and ``ValueError`` for a
    name that is not a plain file name.
    """
    if not name or name.startswith(".") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"key name {name!r} must be a plain file name")
    folder = Path(directory).expanduser()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_file, secret_file = folder / f"{name}.key", folder / f"{name}.key_secret"
    for file in (public_file, secret_file):
        if file.exists():
            raise FileExistsError(f"{file} already exists; not overwriting a key")
    pair = KeyPair.generate()
    _write_new(secret_file, _certificate(_SECRET_BANNER, pair, True), 0o600)
    _write_new(public_file, _certificate(_PUBLIC_BANNER, pair, False), 0o644)
    return public_file, secret_file, pair
