"""Pub-sub the ZeroMQ guide's way: the Clustered Hashmap Protocol (CHP, ZeroMQ RFC 12).

With ``pubsub_port = P`` the broker's master opens three ports: a snapshot ROUTER on P, a PUB on
P+1 and a collector SUB on P+2 (docs/protocol.md has the frames). The modules, one job each:

* frames.py: the CHP frames (KVPUB, KVSYNC, KTHXBAI, HUGZ, ICANHAZ?), encoded and decoded;
  pure, no sockets.
* core.py: the server's sans-IO core: the last-value cache, its bounds, the one sequence, ttl.
* component.py: the master's component that owns the three sockets (server code).
* events.py: the server's own events (workers, job counts) as updates on reserved keys.
* agent.py: a subscriber's sans-IO state: snapshot, live updates, gap and silence recovery.
* client.py: :class:`Subscriber` and :class:`Publisher` (blocking); aio.py the asyncio
  :class:`AsyncSubscriber`.
* publish.py: :func:`publish` for apps, inside a worker.

This package's ``__init__`` imports nothing, so ``import zmqserver`` (which names
``Subscriber``, ``Publisher`` and ``publish`` lazily) loads no server code.
"""
