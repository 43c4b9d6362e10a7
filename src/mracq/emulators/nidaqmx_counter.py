"""NI-DAQmx counter card emulator: the ``nidaqmx_grpc.NiDAQmx`` service of NI's gRPC
Device Server, as the vendor's client ``nidaqmx`` 1.7.0 (MIT) calls it with
``grpc_options=GrpcSessionOptions(channel, session_name)`` (``nidaqmx/_grpc_interpreter.py``;
the service and messages from ``nidaqmx/_stubs/nidaqmx_pb2*.py``).

RPCs served (others answer UNIMPLEMENTED, as a server without that feature would):

=====================================  ===================================================
``GetSystemInfoAttributeUInt32``       driver version 2025.3.0 (0x1272, 0x1923, 0x2f22)
``CreateTask``                         session name = task name; AUTO attaches to an
                                       existing session of that name
``CreateCICountEdgesChan``             count edges on ``DevN/ctrK``
``SetChanAttributeString`` 0x18c7      ``ci_count_edges_term`` (photon input terminal)
``SetTrigAttributeInt32`` 0x1366/1380  pause trigger type (DIGITAL_LEVEL 10152) and when
                                       (LOW 10214: count while the gate is high)
``SetTrigAttributeString`` 0x1379      pause trigger source (the gate line's terminal)
``StartTask`` ``StopTask``             a start resets the count
``ReadCounterScalarF64``/``U32``       the count so far
``ReadCounterF64Ex``/``U32Ex``         one sample: the count so far
``TaskControl`` ``ClearTask``          commit/abort; clear frees the session
``GetTaskAttribute*`` ``GetChanAttribute*``  name, channel list, counter, terminal,
``GetReadAttributeString`` 0x1823      channel type (COUNTER_INPUT), measurement (COUNT_EDGES)
=====================================  ===================================================

Errors go back as the device server sends them: gRPC status ``UNKNOWN`` with the DAQmx
error code in the trailing metadata ``ni-error``.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent import futures

import grpc

from mracq.emulators.base import Restartable
from mracq.emulators.nv_model import CounterTask, EmulatedNV

log = logging.getLogger(__name__)

DRIVER_VERSION = {0x1272: 2025, 0x1923: 3, 0x2F22: 0}
PAUSE_TYPE, PAUSE_SRC, PAUSE_WHEN, COUNT_TERM = 0x1366, 0x1379, 0x1380, 0x18C7
DIGITAL_LEVEL, LEVEL_LOW = 10152, 10214
ERR_INVALID_TASK, ERR_RESOURCE, ERR_EMULATED = -200088, -50103, -200279


def _stubs():
    from nidaqmx._stubs import nidaqmx_pb2 as pb
    from nidaqmx._stubs import nidaqmx_pb2_grpc as pb_grpc

    return pb, pb_grpc



class NiDaqmxCounterEmulator(Restartable):
    """An emulated NI counter card on ``host:port`` (``port=0``: a free port)."""

    def __init__(self, nv: EmulatedNV, host: str = "127.0.0.1", port: int = 0):
        super().__init__()
        self.nv, self.host, self.port = nv, host, int(port)
        self.name = f"NI-DAQmx counter ({host}:{port})"
        self._server = None
        self._ids = 0
        self._names: dict[int, str] = {}

    def start(self) -> None:
        pb, pb_grpc = _stubs()
        servicer = type("Servicer", (pb_grpc.NiDAQmxServicer,), _methods(self, pb))()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_NiDAQmxServicer_to_server(servicer, server)
        port = server.add_insecure_port(f"{self.host}:{self.port}")
        if port == 0:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        self.port = port
        self.name = f"NI-DAQmx counter ({self.host}:{port})"
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def power_on_reset(self) -> None:
        with self.nv.lock:
            self.nv.tasks.clear()

    def task(self, session, context) -> CounterTask:
        name = session.name or self._names.get(session.id, "")
        t = self.nv.tasks.get(name)
        if t is None:
            _fail(context, ERR_INVALID_TASK, f"Task specified is invalid or does not exist: "
                  f"{session.name!r}")
        return t

    def fault(self, context) -> None:
        """Take the armed faults before an answer."""
        delay = self.faults.take("delay")
        if delay:
            time.sleep(delay)
        if self.faults.take("error") is not None:
            _fail(context, ERR_RESOURCE, "Onboard device memory overflow (emulated fault)")


def _fail(context, code: int, message: str):
    context.set_trailing_metadata((("ni-error", str(code)),))
    context.abort(grpc.StatusCode.UNKNOWN, message)


def _methods(emu: NiDaqmxCounterEmulator, pb) -> dict:
    """The RPC implementations, bound to ``emu``."""
    nv = emu.nv

    def GetSystemInfoAttributeUInt32(self, req, ctx):
        return pb.GetSystemInfoAttributeUInt32Response(
            status=0, value=DRIVER_VERSION.get(req.attribute_raw or req.attribute, 0))

    def CreateTask(self, req, ctx):
        emu.fault(ctx)
        with nv.lock:
            name = req.session_name or f"_unnamedTask<{len(nv.tasks)}>"
            new = name not in nv.tasks
            if req.initialization_behavior == 2 and new:  # ATTACH_TO_SERVER_SESSION
                _fail(ctx, ERR_INVALID_TASK, f"no session named {name!r} to attach to")
            if req.initialization_behavior == 1 and not new:
                _fail(ctx, -200089, f"Task name specified conflicts with an existing task "
                      f"name: {name!r}")
            if new:
                nv.tasks[name] = CounterTask(name)
            emu._ids += 1
            emu._names[emu._ids] = name
        return pb.CreateTaskResponse(status=0, task={"name": name, "id": emu._ids},
                                     new_session_initialized=new)

    def CreateCICountEdgesChan(self, req, ctx):
        t = emu.task(req.task, ctx)
        dev = req.counter.split("/")[0]
        with nv.lock:
            if any(o.counter == req.counter and o.running for o in nv.tasks.values()):
                _fail(ctx, ERR_RESOURCE, f"Resource requested by this task has already been "
                      f"reserved by a different task: {req.counter}")
            t.counter = req.counter
            t.input_terminal = f"/{dev}/PFI{8 + int(req.counter[-1:] or 0)}"  # NI default
        return pb.CreateCICountEdgesChanResponse(status=0)

    def SetChanAttributeString(self, req, ctx):
        t = emu.task(req.task, ctx)
        if (req.attribute_raw or req.attribute) == COUNT_TERM:
            t.input_terminal = req.value
        return pb.SetChanAttributeStringResponse(status=0)

    def SetTrigAttributeInt32(self, req, ctx):
        t = emu.task(req.task, ctx)
        attr, value = req.attribute_raw or req.attribute, req.value_raw or req.value
        if attr == PAUSE_TYPE:
            t.paused_by_level = value == DIGITAL_LEVEL
        elif attr == PAUSE_WHEN:
            t.pause_when_low = value == LEVEL_LOW
        return pb.SetTrigAttributeInt32Response(status=0)

    def SetTrigAttributeString(self, req, ctx):
        t = emu.task(req.task, ctx)
        if (req.attribute_raw or req.attribute) == PAUSE_SRC:
            t.pause_source = req.value
        return pb.SetTrigAttributeStringResponse(status=0)

    def StartTask(self, req, ctx):
        emu.fault(ctx)
        t = emu.task(req.task, ctx)
        with nv.lock:
            t.running, t.count = True, 0
        return pb.StartTaskResponse(status=0)

    def StopTask(self, req, ctx):
        t = emu.task(req.task, ctx)
        t.running = False
        return pb.StopTaskResponse(status=0)

    def TaskControl(self, req, ctx):
        emu.task(req.task, ctx)
        return pb.TaskControlResponse(status=0)

    def ClearTask(self, req, ctx):
        with nv.lock:
            nv.tasks.pop(req.task.name or emu._names.get(req.task.id, ""), None)
        return pb.ClearTaskResponse(status=0)

    def _count(ctx, req) -> float:
        emu.fault(ctx)
        t = emu.task(req.task, ctx)
        if emu.faults.take("garble") is not None:
            return math.nan
        return float(t.count)

    def ReadCounterScalarF64(self, req, ctx):
        return pb.ReadCounterScalarF64Response(status=0, value=_count(ctx, req))

    def ReadCounterScalarU32(self, req, ctx):
        v = _count(ctx, req)
        return pb.ReadCounterScalarU32Response(status=0, value=0 if math.isnan(v) else int(v))

    def ReadCounterF64Ex(self, req, ctx):
        return pb.ReadCounterF64ExResponse(status=0, read_array=[_count(ctx, req)],
                                           samps_per_chan_read=1)

    def ReadCounterU32Ex(self, req, ctx):
        v = _count(ctx, req)
        return pb.ReadCounterU32ExResponse(status=0, read_array=[0 if math.isnan(v) else int(v)],
                                           samps_per_chan_read=1)

    def GetTaskAttributeString(self, req, ctx):
        t = emu.task(req.task, ctx)
        attr = req.attribute_raw or req.attribute
        value = {0x1276: t.name, 0x1273: t.counter.split("/")[-1] if t.counter else "",
                 0x230E: t.counter.split("/")[0]}.get(attr, "")
        return pb.GetTaskAttributeStringResponse(status=0, value=value)

    def GetTaskAttributeUInt32(self, req, ctx):
        t = emu.task(req.task, ctx)
        return pb.GetTaskAttributeUInt32Response(status=0, value=1 if t.counter else 0)

    def GetChanAttributeString(self, req, ctx):
        t = emu.task(req.task, ctx)
        attr = req.attribute_raw or req.attribute
        value = t.input_terminal if attr == COUNT_TERM else t.counter
        return pb.GetChanAttributeStringResponse(status=0, value=value)

    def GetChanAttributeInt32(self, req, ctx):
        emu.task(req.task, ctx)
        attr = req.attribute_raw or req.attribute  # channel type, CI measurement type
        value = {0x187F: 10131, 0x18A0: 10125}.get(attr, 0)
        return pb.GetChanAttributeInt32Response(status=0, value_raw=value)

    def GetReadAttributeString(self, req, ctx):
        t = emu.task(req.task, ctx)
        return pb.GetReadAttributeStringResponse(status=0, value=t.counter)

    def GetTrigAttributeInt32(self, req, ctx):
        t = emu.task(req.task, ctx)
        attr = req.attribute_raw or req.attribute
        value = (DIGITAL_LEVEL if t.paused_by_level else 10230) if attr == PAUSE_TYPE else (
            LEVEL_LOW if t.pause_when_low else 10192)
        return pb.GetTrigAttributeInt32Response(status=0, value_raw=value)

    def GetTrigAttributeString(self, req, ctx):
        t = emu.task(req.task, ctx)
        return pb.GetTrigAttributeStringResponse(status=0, value=t.pause_source)

    names = {k: v for k, v in locals().items() if k[0].isupper()}
    return names
