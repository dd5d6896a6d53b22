"""High availability: a Binary Star pair of brokers (docs/ha.md).

* fsm.py: the state machine (sans-IO), which decides which server of the pair serves clients.
* wire.py: the state messages the two servers publish to each other.

The sockets live in supervisor/ha_side.py, a component of the broker's master.
"""
