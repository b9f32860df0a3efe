"""The live loop's events over Redis Streams (issue 13): feeder, predict-workers, trader, operators.

Importing this package loads neither redis nor pandas: :mod:`settings` (the ``bus:`` config section)
is imported by :mod:`aitrader.config`; the client, processes and operator views import redis-py
where they are used. docs/bus.md describes the topology, schemas and delivery guarantees.
"""
