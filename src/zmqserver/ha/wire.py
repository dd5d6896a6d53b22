"""The message each server of a pair publishes to the other once a heartbeat (sans-IO).

Two frames: a signature, so that a socket pointed at something else by mistake is told apart
from a silent peer, and the state's name. The guide sends the state's number alone; a name
costs a few bytes a second and reads in a packet capture.
"""

from __future__ import annotations

from typing import Final

from .fsm import State

#: The first frame of every state message (the protocol's version is in it).
SIGNATURE: Final = b"ZQHA1"


def encode_state(state: State) -> list[bytes]:
    """The frames that tell the peer we are in ``state``."""
    return [SIGNATURE, state.name.encode()]


def decode_state(frames: list[bytes]) -> State | None:
    """The state a peer's message says, or None if it is not a state message of ours."""
    if len(frames) != 2 or frames[0] != SIGNATURE:
        return None
    try:
        return State[frames[1].decode("ascii")]
    except (KeyError, UnicodeDecodeError):
        return None
