"""Where options come from: a TOML file, ``ZMQSERVER_*`` environment variables, CLI flags.

The schema (names, types, defaults, help) lives in schema.py; this module only reads sources
and layers them, with the precedence flags > environment > file > defaults. Each source is
checked on its own, so an error names the source as well as the key
(``zmqserver.toml: min_servers: expected an integer, got '5'``); the combination is checked
once, by validate.py, as :func:`load` builds the config from the layers.

Unknown keys in a file are errors (a file is written for zmqserver, so a stray key is a typo).
The environment is shared with everything else in the process, so an unknown ``ZMQSERVER_``
variable is an error only when it looks like a misspelt option; other ones are reported as
warnings and ignored (test harnesses and apps use the prefix too).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .schema import Config, _coerce

ENV_PREFIX = "ZMQSERVER_"
#: Names the config file, like ``--config`` (which wins over it).
CONFIG_ENV = "ZMQSERVER_CONFIG"

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_name(option: str) -> str:
    """The environment variable of ``option``: ``min_servers`` -> ``ZMQSERVER_MIN_SERVERS``."""
    return ENV_PREFIX + option.upper()


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _FIELDS, n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def text_parser(f: dataclasses.Field[Any]) -> Callable[[str], Any] | None:
    """How the text of a CLI flag or environment variable becomes this option's value.

    None means "keep the text" (strings). Booleans and tuples are handled by the callers:
    argparse has its own spelling for them (``--flag/--no-flag``, ``nargs``).
    """
    meta = f.metadata
    if meta.get("parse") is not None:
        parse: Callable[[str], Any] = meta["parse"]
        return parse
    kind = meta.get("kind") or type(f.default)
    if kind is int or kind is float:
        return kind
    return None


def parse_text(name: str, text: str, where: str) -> Any:
    """The value of option ``name`` spelt as ``text`` in ``where`` (an environment variable)."""
    f = _FIELDS[name]
    stripped = text.strip()
    if isinstance(f.default, bool):
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise ConfigError(f"{where}: expected true or false (1/0, yes/no, on/off), got {text!r}")
    if isinstance(f.default, tuple):
        # Ports, address lists: separated by spaces or commas.
        items: list[Any] = stripped.replace(",", " ").split()
        if f.default and isinstance(f.default[0], int):
            try:
                items = [int(item) for item in items]
            except ValueError:
                raise ConfigError(f"{where}: expected numbers, got {text!r}") from None
            if len(items) == 1:
                return items[0]  # one port: the backend is the next one (as in a file)
        return items
    if f.default is None and not stripped:
        return None  # ZMQSERVER_PID_FILE= unsets it
    parse = text_parser(f)
    if parse is None:
        return text
    try:
        return parse(stripped)
    except ValueError:
        kind = "an octal number" if f.metadata.get("parse") else f"a number ({parse.__name__})"
        raise ConfigError(f"{where}: expected {kind}, got {text!r}") from None


def _checked(values: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """Type-check each value on its own, with errors that say where the value came from."""
    checked: dict[str, Any] = {}
    for key, value in values.items():
        try:
            checked[key] = _coerce(key, _FIELDS[key].default, value)
        except ConfigError as exc:
            raise ConfigError(f"{where(key)}: {exc}") from None
    return checked


def from_file(path: str) -> dict[str, Any]:
    """The options set in TOML file ``path``: top-level ``name = value`` pairs."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    for key, value in data.items():
        if key not in _FIELDS:
            kind = "table" if isinstance(value, dict) else "option"
            raise ConfigError(f"{path}: unknown {kind} {key!r}{_suggest(key)}")
    return _checked(data, lambda key: path)


@dataclass(slots=True)
class EnvOptions:
    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def from_env(environ: Mapping[str, str]) -> EnvOptions:
    """The options set as ``ZMQSERVER_<OPTION>`` variables in ``environ``."""
    found = EnvOptions()
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _FIELDS:
            hint = _suggest(key)
            if hint:
                raise ConfigError(f"environment variable {name}: unknown option {key!r}{hint}")
            found.warnings.append(f"environment variable {name} is not an option; ignored")
            continue
        found.values[key] = parse_text(key, text, name)
    found.values = _checked(found.values, env_name)
    return found


#: Where an option's value came from when no source set it.
DEFAULT = "default"
#: ... when it was a command-line flag or argument.
COMMAND_LINE = "command line"


@dataclass(frozen=True, slots=True)
class Loaded:
    config: Config
    warnings: tuple[str, ...] = ()
    path: str | None = None
    #: Where each option that some source set came from: ``config file PATH``,
    #: ``environment ZMQSERVER_NAME`` or ``command line`` (the highest source that set it).
    #: An option not in here has its default (:func:`origin`).
    origins: Mapping[str, str] = field(default_factory=dict)

    def origin(self, name: str) -> str:
        """Where option ``name``'s value came from (``zmqserver check`` shows it)."""
        return self.origins.get(name, DEFAULT)


def load(flags: Mapping[str, Any], environ: Mapping[str, str], path: str | None = None) -> Loaded:
    """Layer defaults < file < environment < ``flags`` (already typed, e.g. by argparse).

    ``path`` (``--config``) wins over ``ZMQSERVER_CONFIG``. It is made absolute, so a reload
    (HUP) reads the same file after ``chdir``.
    """
    path = path or environ.get(CONFIG_ENV) or None
    layered: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        path = os.path.abspath(path)
        layered.update(from_file(path))
        origins.update(dict.fromkeys(layered, f"config file {path}"))
    env = from_env(environ)
    layered.update(env.values)
    origins.update({key: f"environment {env_name(key)}" for key in env.values})
    layered.update(flags)
    origins.update(dict.fromkeys(flags, COMMAND_LINE))
    return Loaded(Config.from_mapping(layered), tuple(env.warnings), path, origins)
