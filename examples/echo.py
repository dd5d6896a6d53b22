"""Replies with the payload unchanged (the seed's default behaviour)."""


def app(payload: bytes | list[bytes]) -> bytes | list[bytes]:
    return payload
