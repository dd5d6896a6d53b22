"""The default app of `make serve`: replies with the payload upper-cased.

A multi-frame payload arrives as a list of frames; each frame is upper-cased.
"""


def app(payload: bytes | list[bytes]) -> bytes | list[bytes]:
    if isinstance(payload, list):
        return [frame.upper() for frame in payload]
    return payload.upper()
