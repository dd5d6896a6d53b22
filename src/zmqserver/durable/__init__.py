"""Durable jobs: accept, persist, run later, survive a restart (Titanic, ZeroMQ RFC 9).

* tsp.py: the Titanic Service Protocol's frames, and the options a ``titanic.request`` may carry
  (pure; the client imports it too).
* store.py: the store contract (:class:`~.store.JobStore`), a job's record, and the retry policy.
* sqlite.py: the default store, one SQLite file in WAL mode (stdlib ``sqlite3``).
* component.py: the master's component that answers the TSP services and runs the stored jobs.

Importing this package imports none of its modules: a client that only encodes a request must
not load ``sqlite3`` or the supervisor. docs/durable.md says what is promised and why.
"""
