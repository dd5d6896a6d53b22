"""A leading ``~`` in any option that names a file or directory is the home directory.

The shell expands ``~`` only at the start of a word (``--log-file ~/x`` but not
``--log-file=~/x``), a TOML file and an environment variable never: the server and the clients
expand it themselves, for every source.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from zmqserver.config import Config
from zmqserver.config.schema import _coerce
from zmqserver.config.sources import load
from zmqserver.security.keys import write_key_pair
from zmqserver.security.sockets import ClientCredentials

PATH_OPTIONS = {f.name for f in dataclasses.fields(Config) if f.metadata.get("path")}


def test_every_file_and_directory_option_is_marked_as_a_path() -> None:
    named = {
        f.name
        for f in dataclasses.fields(Config)
        if f.metadata.get("metavar") in ("FILE", "DIR", "KEY|FILE")
    }
    assert named <= PATH_OPTIONS
    assert {"log_file", "pid_file", "chdir", "key_file", "curve_secret_key_file"} <= PATH_OPTIONS


@pytest.mark.parametrize("name", sorted(PATH_OPTIONS))
def test_tilde_is_expanded_from_keywords(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    # Each source's values go through _coerce (some options are valid only in company, so
    # not every one can make a Config alone).
    assert _coerce(name, None, "~/x") == f"{tmp_path}/x"
    assert Config.from_mapping({"log_file": "~/x"}).log_file == f"{tmp_path}/x"


def test_tilde_is_expanded_from_the_file_and_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    toml = tmp_path / "z.toml"
    toml.write_text('log_file = "~/logs/z.log"\n')
    loaded = load({}, {"ZMQSERVER_PID_FILE": "~/z.pid"}, str(toml))
    assert loaded.config.log_file == f"{tmp_path}/logs/z.log"
    assert loaded.config.pid_file == f"{tmp_path}/z.pid"


def test_a_z85_key_is_not_a_path(tmp_path: Path) -> None:
    key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    assert Config.from_mapping({"server_key": key}).server_key == key


def test_client_key_files_expand_tilde(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/security.md: ``Client(..., client_key_file="~/.zmqserver/alice.key_secret")``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    _, _, server = write_key_pair("~/keys", "server")
    _, _, alice = write_key_pair("~/.zmqserver", "alice")
    assert (tmp_path / ".zmqserver" / "alice.key_secret").exists()
    creds = ClientCredentials.load("~/keys/server.key", "~/.zmqserver/alice.key_secret")
    assert creds.server_key == server.public
    assert creds.pair == alice
