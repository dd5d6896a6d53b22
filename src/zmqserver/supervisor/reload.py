"""HUP: which options a reloaded config may change, and how the pools take them on.

Rule 1: decisions about a new config only; starting the new generation and retiring the old one
is the master's (``handle_hup``) and the flock's (workers.py) business.

Options marked ``reload`` in the schema take effect; the others are logged as needing a restart.
A service's options reload, its app included (unless ``preload_app``: the master holds that
one); adding, removing or reordering services needs a restart (the broker's queues and the
default service are set up at start-up).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..config import Config, ServiceSpec
from ..errors import ConfigError
from .workers import Pool

log = logging.getLogger("zmqserver")


def reloaded_config(old: Config, fresh: Config) -> Config | None:
    """``old`` with what HUP may change taken from ``fresh``; None (logged) if that is invalid."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        before, after = getattr(old, f.name), getattr(fresh, f.name)
        if before == after:
            continue
        if f.name == "services":
            after = reloaded_services(old, fresh)
            if after != before:
                changes[f.name] = after
        elif f.metadata.get("reload") and not (f.name == "app" and old.preload_app):
            changes[f.name] = after
            log.info("HUP: %s is now %r (was %r)", f.name, after, before)
        else:
            log.warning("HUP: %s changed to %r; it takes effect after a restart", f.name, after)
    try:
        return old.replace(**changes).validate()
    except ConfigError as exc:  # a combination of new and kept values
        log.error("HUP: %s; keeping the previous config", exc)
        return None


def reload_pools(pools: dict[str, Pool], services: dict[str, Config]) -> None:
    """Give each pool its reloaded config, keeping the old one to roll back to."""
    for pool in pools.values():
        new = services[pool.name]
        app = pool.app
        if new.app != pool.config.app:
            app = new.app if callable(new.app) else None
        pool.previous = (pool.config, pool.app)
        pool.use(new, app)


def reloaded_services(old: Config, fresh: Config) -> tuple[ServiceSpec, ...]:
    """The services HUP takes on: the same ones, each with its options from ``fresh``.

    Adding, removing or reordering services needs a restart (the router's queues and the
    default service are set up at start-up); a service's options, app included, reload.
    """
    before = [spec.name for spec in old.services]
    after = [spec.name for spec in fresh.services]
    if before != after:
        log.warning(
            "HUP: services changed to %s; that takes effect after a restart (the options of "
            "the services that remain are reloaded)",
            after or "none",
        )
    by_name = {spec.name: spec for spec in fresh.services}
    reloaded = []
    for spec in old.services:
        settings = by_name.get(spec.name, spec).settings
        kept = spec.settings
        if old.preload_app and settings.get("app") != kept.get("app"):
            log.warning(
                "HUP: services.%s.app changed; with preload_app it takes effect after a restart",
                spec.name,
            )
            settings.pop("app", None)
            if "app" in kept:
                settings["app"] = kept["app"]
        for key in sorted(set(settings) | set(kept)):
            if settings.get(key) != kept.get(key):
                log.info(
                    "HUP: services.%s.%s is now %r (was %r)",
                    spec.name,
                    key,
                    settings.get(key),
                    kept.get(key),
                )
        reloaded.append(ServiceSpec(spec.name, tuple(settings.items())))
    return tuple(reloaded)
