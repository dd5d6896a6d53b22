"""The control commands: what `zmqserver status`/`zmqserver control` and the control endpoint
may ask of a running master, each documented once (docs/operations.md lists them).

Rule 1: one command path (circus' ``commands/``). A command that a signal also does goes
through the signal's handler: ``reload`` is :meth:`Master.handle_hup`, ``stop`` is
:meth:`Master.handle_term`, ``incr``/``decr`` are TTIN/TTOU for one service. A command runs in
the master's loop (the control component calls :func:`execute` from its ``handle``), so it
never races the loop, and the master plans its workers on the same turn.

A request is a JSON object ``{"command": NAME, ...arguments}``; the reply is a JSON object with
``"ok": true`` and the result, or ``"ok": false`` and an ``"error"``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .master import Master
    from .workers import Pool

log = logging.getLogger("zmqserver")

#: What a command returns (merged into the reply under ``"ok": true``).
Result = dict[str, Any]


class CommandError(Exception):
    """The request cannot be carried out: the message goes back to who asked."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One command: its name, whether it changes the server (then it is logged with who
    asked), what it does, and the one line of help `zmqserver control --help` shows."""

    name: str
    action: bool
    run: Callable[[Master, dict[str, Any]], Result]
    help: str


def _pool(master: Master, args: dict[str, Any]) -> Pool:
    name = args.get("service")
    if name is None and len(master.pools) == 1:
        return next(iter(master.pools.values()))
    if not isinstance(name, str) or name not in master.pools:
        known = ", ".join(master.pools)
        raise CommandError(f"no such service: {name!r} (services: {known})")
    return master.pools[name]


def _count(args: dict[str, Any], key: str = "count", default: int | None = None) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CommandError(f"{key}: expected a whole number >= 0, got {value!r}")
    return value


def _scale(master: Master, args: dict[str, Any]) -> Result:
    pool = _pool(master, args)
    wanted = _count(args)
    count = pool.scaler.pin(wanted)
    if count != wanted:
        return {"service": pool.name, "workers": count, "note": "max_servers caps it"}
    return {"service": pool.name, "workers": count}


def _step(master: Master, args: dict[str, Any], *, up: bool) -> Result:
    """COUNT steps of the autoscaler's own stride, as that many TTIN (``up``) or TTOU signals:
    each step starts from the target the last one set, so COUNT=3 is three signals, not one."""
    pool = _pool(master, args)
    step = pool.scaler.more if up else pool.scaler.fewer
    target = len(master.flock.current(pool))
    for _ in range(_count(args, default=1)):
        target = step(target)
    return {"service": pool.name, "workers": target}


def _incr(master: Master, args: dict[str, Any]) -> Result:
    return _step(master, args, up=True)


def _decr(master: Master, args: dict[str, Any]) -> Result:
    return _step(master, args, up=False)


def _drain(master: Master, args: dict[str, Any]) -> Result:
    pool = _pool(master, args)
    pool.scaler.pin(0)
    return {"service": pool.name, "workers": 0}


def _reload(master: Master, args: dict[str, Any]) -> Result:
    master.handle_hup()
    return {"generations": {name: pool.generation for name, pool in master.pools.items()}}


def _stop(master: Master, args: dict[str, Any]) -> Result:
    graceful = args.get("graceful", True)
    if not isinstance(graceful, bool):
        raise CommandError(f"graceful: expected true or false, got {graceful!r}")
    if graceful:
        master.handle_term()
    else:
        master.handle_int()
    return {"stopping": True}


def _stats(master: Master, args: dict[str, Any]) -> Result:
    return master.status()


def _workers(master: Master, args: dict[str, Any]) -> Result:
    return {"workers": master.status()["workers"]}


def _services(master: Master, args: dict[str, Any]) -> Result:
    return {"services": master.status()["services"]}


def _config(master: Master, args: dict[str, Any]) -> Result:
    shown: dict[str, Any] = {}
    for f in dataclasses.fields(master.config):
        value = getattr(master.config, f.name)
        if callable(value):
            value = f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', '?')}"
        elif isinstance(value, tuple):
            value = [str(v) if dataclasses.is_dataclass(v) else v for v in value]
        shown[f.name] = value
    return {"config": shown}


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("stats", False, _stats, "the whole status document (services and workers)"),
        Command("services", False, _services, "the services part of stats"),
        Command("workers", False, _workers, "the workers part of stats"),
        Command("config", False, _config, "the options the server runs with"),
        Command("scale", True, _scale, "scale SERVICE COUNT: keep exactly COUNT workers"),
        Command("incr", True, _incr, "incr SERVICE [COUNT]: COUNT more workers (as TTIN)"),
        Command("decr", True, _decr, "decr SERVICE [COUNT]: COUNT fewer workers (as TTOU)"),
        Command("drain", True, _drain, "drain SERVICE: finish running jobs, start no more"),
        Command("reload", True, _reload, "reload the config, new worker generation (as HUP)"),
        Command("stop", True, _stop, "stop the server gracefully (as TERM)"),
    )
}


def execute(master: Master, request: Any, who: str) -> Result:
    """Run one request (a decoded JSON object) for ``who`` (as the log names them)."""
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        return {"ok": False, "error": 'expected a JSON object with a "command"'}
    name = request["command"]
    command = COMMANDS.get(name)
    if command is None:
        return {"ok": False, "error": f"unknown command {name!r} (commands: {', '.join(COMMANDS)})"}
    args = {k: v for k, v in request.items() if k != "command"}
    try:
        result = command.run(master, args)
    except CommandError as exc:
        if command.action:
            log.warning("control: %s %s refused (asked by %s): %s", name, args, who, exc)
        return {"ok": False, "error": str(exc)}
    if command.action:
        shown = "".join(f" {k}={v}" for k, v in args.items())
        log.info("control: %s%s (asked by %s)", name, shown, who)
        master.command_done()
    return {"ok": True, **result}
