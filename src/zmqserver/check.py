"""``zmqserver check``: is this configuration one a server would start with, and what is it?

Rule 1: nothing here binds, forks or writes. It runs the start-up checks that need no socket
(the config itself, the key files, the user and group, the chdir directory, importing each app
and hook) and reports the effective value of every option with the source it came from
(config/sources.py records that), so "why is min_servers 4?" has an answer before the server
runs. gunicorn's ``--check-config`` and celery's ``inspect conf`` are the models; unlike them,
this also says *where* each value came from.

Imports happen in this process and run module-level code, as the workers would.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .config import HOOKS, Config
from .config.sources import Loaded
from .errors import AppLoadError, ConfigError

__all__ = ["Report", "check", "render_json", "render_text"]


@dataclass(slots=True)
class Report:
    """What ``zmqserver check`` found: the options with their sources, or the error."""

    command: str
    #: name -> (the value as TOML spells it, where it came from), in the schema's order.
    options: dict[str, tuple[Any, str]] = field(default_factory=dict)
    #: service -> {option: value} that the service sets for itself (none: one service).
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.error is None


def check(loaded: Loaded, command: str = "serve") -> Report:
    """Run the start-up checks that need no socket on ``loaded``; the report says what it is.

    ``command`` is ``serve`` (the broker: its key files) or ``worker`` (a remote pool: its
    ``connect`` endpoint and keys).
    """
    config = loaded.config
    report = Report(command, warnings=list(loaded.warnings))
    for f in dataclasses.fields(Config):
        if f.name == "services" or f.metadata.get("command") not in (None, command):
            continue
        value = getattr(config, f.name)
        where = loaded.origin(f.name)
        if value is None and f.metadata.get("shown") is not None:
            # Worked out from other options (min/max spare servers): show the result.
            value = _derived(config, f.name)
            where = f"{where} (from the other options)"
        if f.name == "umask" and value is not None:
            value = f"0o{value:03o}"  # octal, as in the file (TOML reads 0o027)
        report.options[f.name] = (_plain(value), where)
    for spec in config.services:
        report.services[spec.name] = {key: _plain(value) for key, value in spec.options}
    if config.services:
        report.options["services"] = (list(report.services), loaded.origin("services"))
    try:
        _start_up_checks(config, command)
    except (ConfigError, AppLoadError) as exc:
        report.error = str(exc)
    return report


def _derived(config: Config, name: str) -> Any:
    min_spare, max_spare = config.spare_servers
    return {"min_spare_servers": min_spare, "max_spare_servers": max_spare}.get(name)


def _plain(value: Any) -> Any:
    """A value as JSON and TOML have it: tuples as lists, a callable as its dotted name."""
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if callable(value):
        return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', value)}"
    return value


def _start_up_checks(config: Config, command: str) -> None:
    """What the server checks before it binds, in the same order; raises on the first error."""
    from ._process import Credentials
    from .hooks import Hooks
    from .loader import load_app

    if command == "worker":
        from .security import ClientCredentials
        from .supervisor.remote_pool import check_connect

        check_connect(config)
        if config.server_key is not None:
            ClientCredentials.load(config.server_key, config.key_file)
    else:
        from .security import ServerSecurity

        ServerSecurity.load(config)
        if config.ha_peer_key is not None:
            from .supervisor.ha_link import load_peer_key

            load_peer_key(config.ha_peer_key)
    Credentials.resolve(config.user, config.group)
    if config.chdir is not None:
        try:
            os.chdir(config.chdir)  # as the server does: the apps are imported from there
        except OSError as exc:
            raise ConfigError(f"chdir: {config.chdir}: {exc.strerror}") from None
    for name, service in config.service_configs().items():
        if isinstance(service.app, str):
            try:
                load_app(service.app)
            except AppLoadError as exc:
                raise AppLoadError(f"service {name!r}: {exc}") from None
        Hooks.load(service, HOOKS)


def render_text(report: Report) -> str:
    """The report for a terminal: a verdict line, then ``option  value  source`` rows."""
    lines = [f"zmqserver: warning: {warning}" for warning in report.warnings]
    width = max(len(name) for name in report.options)
    values = {name: _toml(value) for name, (value, _) in report.options.items()}
    value_width = min(40, max(len(text) for text in values.values()))
    for name, (_, where) in report.options.items():
        lines.append(f"  {name:<{width}}  {values[name]:<{value_width}}  {where}")
    for service, settings in report.services.items():
        origin = report.options["services"][1]
        lines.append(f"  [services.{service}]")
        for key, value in settings.items():
            lines.append(f"    {key:<{width - 2}}  {_toml(value):<{value_width}}  {origin}")
    # The verdict last, where a terminal leaves the eye.
    if report.error is not None:
        lines.append(f"zmqserver check: not valid: {report.error}")
    else:
        changed = sum(not where.startswith("default") for _, where in report.options.values())
        lines.append(
            f"zmqserver check: valid ({report.command}; {changed} option(s) set by the config "
            "file, the environment or the command line)"
        )
    return "\n".join(lines)


def render_json(report: Report) -> str:
    """The report as one JSON object (``--json``), for scripts and CI."""
    data: dict[str, Any] = {
        "valid": report.valid,
        "command": report.command,
        "error": report.error,
        "warnings": report.warnings,
        "options": {
            name: {"value": value, "source": where}
            for name, (value, where) in report.options.items()
        },
        "services": report.services,
    }
    return json.dumps(data, indent=2, default=str)


def _toml(value: Any) -> str:
    """How the value would be written in the config file (None: unset)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.startswith("0o") else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)
