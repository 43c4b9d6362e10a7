"""What every protocol server of an emulator shares: faults, and going down and back up.

Faults are injected from outside (:mod:`mracq.emulators.control`) and taken by the next
request of the instrument they name:

- ``delay``: the next reply comes ``seconds`` late (the client times out);
- ``garble``: the next reply is not in the protocol;
- ``error``: the instrument queues an error (SCPI ``SYST:ERR?`` entry, DAQmx error status,
  JSON-RPC error object);
- ``down``: the instrument goes away (listeners closed, connections dropped) for
  ``seconds``, then comes back with its power-on state, as after a power cycle.
"""

from __future__ import annotations

import logging
import socket
import threading

log = logging.getLogger(__name__)


class Faults:
    """Pending one-shot faults of one instrument (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}

    def arm(self, kind: str, value: float = 0.0) -> None:
        if kind not in ("delay", "garble", "error"):
            raise ValueError(f"unknown fault {kind!r}; expected delay, garble, error or down")
        with self._lock:
            self._pending[kind] = float(value)

    def take(self, kind: str) -> float | None:
        """The armed value of ``kind`` (consumed), or None."""
        with self._lock:
            return self._pending.pop(kind, None)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()


class Restartable:
    """A server that can go down for a while and come back (``start``/``stop`` overridden)."""

    name = "instrument"

    def __init__(self):
        self.faults = Faults()
        self._timer: threading.Timer | None = None

    def start(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def power_on_reset(self) -> None:
        """Back to the power-on state (override)."""

    def down(self, seconds: float) -> None:
        """Drop every connection and stop listening for ``seconds``, then come back."""
        log.warning("%s: going down for %.3g s", self.name, seconds)
        self.stop()
        self.faults.clear()

        def back():
            self.power_on_reset()
            self.start()
            log.warning("%s: back up", self.name)

        self._timer = threading.Timer(float(seconds), back)
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.stop()


def stop_server(server, clients) -> None:
    """Shut ``server`` (a socketserver, or None) down and drop every connected client
    socket; returns None, for ``self._server = stop_server(...)``."""
    if server is None:
        return None
    server.shutdown()
    server.server_close()
    for c in list(clients):
        try:
            c.shutdown(socket.SHUT_RDWR)
            c.close()
        except OSError:
            pass
    return None
