"""Gated photon counting with NI-DAQmx counter tasks through ``nidaqmx`` over gRPC.

One count-edges task per gate line (signal, bright reference, dark reference): the
photon detector's TTL goes to every counter's source terminal (``photons``), and each
counter's pause trigger is its gate line from the pulse sequencer (digital level, paused
while the gate is low), so a counter adds up the photons of its gate windows over all
shots of a point. Per point: start the three tasks, play, read each count once, stop.
(One buffered sample per gate window would move 3 x shots samples per point.)

The session runs on NI's gRPC Device Server: ``nidaqmx.Task(name,
grpc_options=GrpcSessionOptions(channel, name))`` (the session name must equal the task
name). Every RPC carries a deadline of ``timeout`` seconds.
"""

from __future__ import annotations

import logging
import math

from mracq.devices.drivers.base import InstrumentError, Reconnecting

log = logging.getLogger(__name__)

ROLES = ("signal", "bright", "dark")


def _deadline_channel(address: str, timeout: float):
    import grpc

    class Deadline(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def _details(self, d):
            return d._replace(timeout=timeout) if hasattr(d, "_replace") else _Details(d, timeout)

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._details(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(self._details(details), request)

    channel = grpc.insecure_channel(address)
    return channel, grpc.intercept_channel(channel, Deadline())


class _Details:
    """ClientCallDetails with a new timeout (grpc's own class is a plain namedtuple-like)."""

    def __init__(self, d, timeout):
        self.method, self.timeout, self.metadata = d.method, timeout, d.metadata
        self.credentials = d.credentials
        self.wait_for_ready = getattr(d, "wait_for_ready", None)
        self.compression = getattr(d, "compression", None)


class GatedCounter(Reconnecting):
    """Three gated count-edges tasks on an NI counter card behind a gRPC Device Server.

    Parameters
    ----------
    address : str
        ``host:port`` of the NI gRPC Device Server.
    counters : sequence of 3 str
        Physical counters for the signal, bright and dark gates, e.g. ``"Dev1/ctr0"``.
    gates : sequence of 3 str
        Terminals the gate lines are wired to, e.g. ``"/Dev1/PFI1"``.
    photons : str
        Terminal of the photon detector's TTL, e.g. ``"/Dev1/PFI0"``.
    timeout : float
        Deadline of each RPC, s.
    """

    def __init__(self, address: str, counters, gates, photons: str, *, timeout: float = 5.0,
                 name: str = "counter"):
        super().__init__()
        if len(counters) != 3 or len(gates) != 3:
            raise ValueError("counters and gates need 3 entries each (signal, bright, dark)")
        self.address, self.counters, self.gates = address, list(counters), list(gates)
        self.photons, self.timeout = photons, float(timeout)
        self.label = f"{name} (nidaqmx at {address})"
        _ = self.client

    def _open(self):
        import nidaqmx
        from nidaqmx.constants import Level, TriggerType
        from nidaqmx.grpc_session_options import GrpcSessionOptions

        raw, channel = _deadline_channel(self.address, self.timeout)
        tasks = []
        try:
            for role, ctr, gate in zip(ROLES, self.counters, self.gates, strict=True):
                name = f"mracq_{role}"
                t = nidaqmx.Task(name, grpc_options=GrpcSessionOptions(channel, name))
                tasks.append(t)
                ch = t.ci_channels.add_ci_count_edges_chan(ctr)
                ch.ci_count_edges_term = self.photons
                t.triggers.pause_trigger.trig_type = TriggerType.DIGITAL_LEVEL
                t.triggers.pause_trigger.dig_lvl_src = gate
                t.triggers.pause_trigger.dig_lvl_when = Level.LOW
        except Exception:
            _close_all(tasks)
            raw.close()
            raise
        from nidaqmx.stream_readers import CounterReader

        return raw, tasks, [CounterReader(t.in_stream) for t in tasks]

    def _close(self, client) -> None:
        raw, tasks, _ = client
        _close_all(tasks)
        raw.close()

    def start(self) -> None:
        def run(client):
            for t in client[1]:
                t.start()

        self.call("StartTask", run)

    def read(self) -> tuple[int, int, int]:
        """Counts of the signal, bright and dark gates since :meth:`start`; then stops."""
        def run(client):
            out = []
            for role, reader in zip(ROLES, client[2], strict=True):
                v = reader.read_one_sample_double(timeout=self.timeout)
                if not (isinstance(v, float) and math.isfinite(v) and v >= 0 and v == int(v)):
                    raise InstrumentError(self.label, f"ReadCounterScalarF64 ({role} gate)",
                                          f"garbled count {v!r}")
                out.append(int(v))
            for t in client[1]:
                t.stop()
            return tuple(out)

        return self.call("ReadCounterScalarF64", run)


def _close_all(tasks) -> None:
    for t in tasks:
        try:
            t.close()
        except Exception:  # noqa: BLE001 - the server may be gone
            log.debug("closing %s failed", t, exc_info=True)
