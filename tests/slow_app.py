"""An app module that takes a second to import: a daemon must not say "up" before it has."""

import time

time.sleep(1.0)


def app(payload: bytes | list[bytes]) -> bytes | list[bytes]:
    return payload
