"""What a plan stored: its events as the RunEngine emitted them, for pause-safe results.

After a hard pause (second Ctrl-C) the RunEngine rewinds to the last checkpoint and replays
the messages since, but the plan's generator keeps the responses of the first pass: a
plan that builds its result from ``trigger_and_read`` responses can return a value other
than the one stored (the replayed point is the one saved).  A plan that takes each value
from the emitted event instead returns exactly what was stored.  A point replayed after
its ``save`` gets the same ``seq_num`` again; :class:`mracq.storage.JournalWriter` keeps
the first one, and so does :class:`StoredEvents`.

Checkpoint rule of mracq plans (:func:`point_done`): a checkpoint before every point
(deferred pause, first Ctrl-C, stops there) and right after it (a hard pause replays at
most the point in flight), and after ``open_run`` and ``close_run`` (a replay never
crosses runs).
"""

from __future__ import annotations

from bluesky.utils import Msg

__all__ = ["StoredEvents", "point_done"]


class StoredEvents:
    """Events of one stream of one run, first per ``seq_num``, as they are emitted.

    Use in a plan::

        stored = StoredEvents()
        yield from stored.subscribe()          # before open_run
        uid = yield from bps.open_run(md)
        stored.run_uid = uid
        ...
        yield from bps.trigger_and_read(dets)  # k-th event of "primary"
        value = stored.rows[k]["det"]

    The subscription ends with the RunEngine call (``RE(...)``).

    Parameters
    ----------
    stream : str
        Event stream name.
    """

    def __init__(self, stream: str = "primary"):
        self.stream = stream
        self.run_uid = None
        self.rows: dict[int, dict] = {}
        self._descriptors: set[str] = set()
        self._taken = 0

    def __call__(self, name, doc):
        if name == "descriptor":
            if doc.get("run_start") == self.run_uid and doc.get("name") == self.stream:
                self._descriptors.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in self._descriptors:
            self.rows.setdefault(doc["seq_num"], dict(doc["data"]))

    def subscribe(self):
        """Plan: subscribe to the RunEngine's documents (uncached, not replayed)."""
        return (yield Msg("subscribe", None, self, "all"))

    def last(self) -> dict:
        """Data of the newest event."""
        return self.rows[max(self.rows)]

    def take(self, reading=None) -> dict:
        """Data of the event just saved: the newest one, if it is newer than the last one
        taken; else (a RunEngine that emits no documents, e.g. a Bluesky simulator)
        the values of ``reading`` (a ``trigger_and_read`` response; {} for None)."""
        newest = max(self.rows, default=0)
        if newest > self._taken:
            self._taken = newest
            return self.rows[newest]
        return {k: (v or {}).get("value") for k, v in (reading or {}).items()}

    def __len__(self):
        return len(self.rows)


def point_done():
    """Plan: the checkpoint that closes a point (see the module docstring)."""
    yield Msg("checkpoint")
