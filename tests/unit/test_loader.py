from __future__ import annotations

import pytest

from zmqserver.errors import AppLoadError
from zmqserver.loader import echo, load_app


def test_loads_module_callable():
    app = load_app("examples.upper:app")
    assert app(b"abc") == b"ABC"


def test_module_alone_means_app_attribute():
    assert load_app("examples.upper")(b"x") == b"X"


def test_none_is_echo_and_callables_pass_through():
    assert load_app(None) is echo

    def mine(payload):
        return payload

    assert load_app(mine) is mine


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
        ("examples.upper:nope", "has no attribute 'nope'"),
        ("examples.upper:__doc__", "is not callable"),
        ("tests.broken_app:app", "RuntimeError: this module is broken on purpose"),
        (":app", "not of the form"),
        ("examples.upper:not valid", "not of the form"),
    ],
)
def test_bad_specs_explain_themselves(spec, message):
    with pytest.raises(AppLoadError, match=message):
        load_app(spec)
