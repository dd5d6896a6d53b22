"""The master process: the loop, the signals, the workers, and the components it composes.

* master.py: :class:`Master`, the loop (waits on every component's sockets and the signal
  wake-up fd, with the timeout from the next deadline) and the ``handle_<signal>`` methods.
* signals.py: the trivial handler, the queue, and the dispatch.
* workers.py: the pools and the worker processes (fork, reap, scale, retire, roll back).
* backoff.py: when to start a worker again after deaths, and when a crash loop stops the server.
* reload.py: what HUP takes on from a reloaded config.
* autoreload.py: ``reload``, a component that sends HUP when the app's source files change.
* component.py: the contracts (:class:`Component`, :class:`WorkerView`, :class:`Waiter`).
* broker_side.py: the broker as a component (a broker's master); remote_pool.py: a remote pool's
  status pipe as a component (``zmqserver worker``); durable_side.py: durable jobs (``--store``);
  pub-sub's component is
  pubsub/component.py (composed here when ``pubsub_port`` is set).
* control.py: the control endpoint (commands.py: what it may be asked; observe.py: the status
  document); http.py: ``/metrics``, ``/healthz``, ``/readyz`` and the dashboard.

:func:`arbiter` and :func:`pool_supervisor` compose the two kinds of master the CLI runs.
docs/architecture.md draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .._process import Credentials
from ..config import App, Config
from .autoreload import ReloadOnChange
from .broker_side import BrokerComponent
from .component import Component, Host, StartError, StateOf, Waiter, WorkerView
from .control import ControlComponent
from .durable_side import DurableComponent
from .http import HttpComponent
from .master import SCALE_CHECK, Master
from .remote_pool import StatusComponent, check_connect
from .workers import Flock, Pool, WorkerProcess

__all__ = [
    "SCALE_CHECK",
    "BrokerComponent",
    "Component",
    "ControlComponent",
    "DurableComponent",
    "HttpComponent",
    "Flock",
    "Host",
    "Master",
    "Pool",
    "ReloadOnChange",
    "StartError",
    "StateOf",
    "StatusComponent",
    "Waiter",
    "WorkerProcess",
    "WorkerView",
    "arbiter",
    "pool_supervisor",
]


def arbiter(
    config: Config,
    apps: Mapping[str, App] | None = None,
    *,
    reload: Callable[[], Config] | None = None,
    credentials: Credentials | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Master:
    """The broker's master: the broker component (both ROUTERs, the routing core, ZAP), which
    also tells the master about its workers and runs the loop's wait, and the local pools."""
    config = config.validate()
    broker = BrokerComponent(config)
    components: list[Component] = [broker]
    ha = None
    if config.ha_role is not None:
        # Right after the broker: it decides on the requests the broker kept while not active
        # before the components that take some of them (durable jobs' intake) look.
        from .ha_side import HaComponent

        ha = HaComponent(config, broker)
        components.append(ha)
    pubsub = None
    if config.pubsub_port is not None:
        # Imported here: pub-sub is optional, and its component imports this package's modules.
        from ..pubsub.component import PubSubComponent

        pubsub = PubSubComponent(config, broker)
        components.append(pubsub)  # after the broker: its ZAP, context
        if ha is not None:
            from ..pubsub.endpoints import peer_pubsub

            assert config.ha_peer is not None
            pubsub.attach_ha(
                ha, peer_pubsub(config.ha_peer, config.pubsub_port, config.ha_peer_pubsub)
            )
            pubsub.watch_ha(ha)  # the pair's state changes as events
    if config.control:
        components.append(ControlComponent(config, broker))
    if config.metrics_port is not None:
        components.append(HttpComponent(config))
    if config.store is not None:
        # After the broker: it opens on the broker's context and binds on its frontend.
        durable = DurableComponent(config, broker)
        components.append(durable)
        if pubsub is not None:
            pubsub.watch_durable(durable)  # its counts and dead letters as events
    return Master(
        config,
        broker,
        [*components, *_development(config)],
        apps,
        waiter=broker,
        reload=reload,
        credentials=credentials,
        on_ready=on_ready,
        where=f"frontend {config.frontend_endpoint}",
    )


def pool_supervisor(
    config: Config,
    apps: Mapping[str, App] | None = None,
    *,
    reload: Callable[[], Config] | None = None,
    credentials: Credentials | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Master:
    """A remote pool's master: no broker; its workers connect to ``config.connect`` and report
    their states through the status component's pipe."""
    check_connect(config)
    config = config.validate()
    status = StatusComponent(config)
    if config.pubsub_port is not None and config.connect is not None:
        from ..pubsub import publish

        publish.route = publish.pool_route(config.connect, config.pubsub_port)
    return Master(
        config,
        status,
        [status, *_development(config)],
        apps,
        reload=reload,
        credentials=credentials,
        on_ready=on_ready,
        where=f"broker {config.connect}",
    )


def _development(config: Config) -> list[Component]:
    """The components ``reload`` adds (watching the app's files)."""
    return [ReloadOnChange()] if config.reload else []
