"""Swabian Pulse Streamer 8/2 emulator: JSON-RPC 2.0 over HTTP and the binary upload.

Protocol as the vendor's client ``pulsestreamer`` 2.1.2 (MIT) speaks it
(``pulsestreamer/jrpc/pulse_streamer_jrpc.py``, ``pulse_streamer_base.py``):

- ``POST http://HOST:8050/json-rpc``, JSON-RPC 2.0, positional params. Methods served:
  ``getSerial``, ``getFPGAID``, ``getFirmwareVersion`` (``2.1.0``: >= 1.1.0, so the client
  opens the binary port), ``getHardwareVersion``, ``isRunning``, ``reset``, ``constant``,
  ``forceFinal``, ``stream`` (base64 of little-endian ``<IBhh`` steps), ``setTrigger``,
  ``getTriggerStart``, ``getTriggerRearm``, ``startNow``, ``rearm``, ``hasFinished``,
  ``isStreaming``, ``hasSequence``, ``getUnderflow``;
- TCP ``HOST:21328``: a 32-byte command header ``<4I2Q`` (magic 0x53504953, command id,
  command, 0, payload length, 0); command 0x0 (stream) carries a ``<qQ2h4BQ`` header
  (runs, steps, final A0, A1, digital, 3 x pad, slot) and ``steps x 9`` bytes; the
  answer is a 32-byte header with the same command id and error code 0.

Both ports are fixed by the client: one emulator per loopback address (127.0.0.2,
127.0.0.3, ... are loopback too). A stream plays at once (trigger ``IMMEDIATE``, the
power-on default) or at ``startNow`` (trigger ``SOFTWARE``) into
:meth:`mracq.emulators.nv_model.EmulatedNV.play`, on a thread: the upload is answered at
once and ``hasFinished`` turns true when the photons are counted.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import socketserver
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from mracq.emulators.base import Restartable
from mracq.emulators.nv_model import EmulatedNV

log = logging.getLogger(__name__)

JSON_PORT, BINARY_PORT = 8050, 21328
MAGIC = 0x53504953
FIRMWARE = "2.1.0"
STEP = np.dtype([("count", "<u4"), ("digi", "u1"), ("a0", "<i2"), ("a1", "<i2")])


class PulseStreamerEmulator(Restartable):
    """One emulated Pulse Streamer 8/2 on ``host`` (ports 8050 and 21328)."""

    def __init__(self, nv: EmulatedNV, host: str = "127.0.0.1", serial: str = "00:26:32:f0:00:01"):
        super().__init__()
        self.nv, self.host, self.serial = nv, host, serial
        self.name = f"Pulse Streamer 8/2 ({host})"
        self._http = self._bin = None
        self._clients: set = set()
        self.power_on_reset()

    def power_on_reset(self) -> None:
        self.trigger_start, self.trigger_rearm = 0, 0
        self.pending = None  # (steps, n_runs) waiting for a software trigger
        self.has_sequence, self.finished, self.streaming = False, True, False
        self.streams = 0
        self._token = None

    # ------------------------------------------------------------------ servers
    def start(self) -> None:
        emu = self

        class Http(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                emu._clients.add(self.connection)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = emu.handle_jsonrpc(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        class HttpServer(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        class Binary(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                emu._clients.add(self.request)
                try:
                    while emu.handle_binary(self.request):
                        pass
                except OSError:
                    pass
                except Exception:  # noqa: BLE001 - log it; the client sees the drop
                    log.exception("%s: binary connection failed", emu.name)
                finally:
                    emu._clients.discard(self.request)

        class BinServer(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._http = HttpServer((self.host, JSON_PORT), Http)
        try:
            self._bin = BinServer((self.host, BINARY_PORT), Binary)
        except OSError:
            self._http.server_close()
            self._http = None
            raise
        for srv in (self._http, self._bin):
            threading.Thread(target=srv.serve_forever, daemon=True,
                             name=f"pulsestreamer-{srv.server_address[1]}").start()

    def stop(self) -> None:
        for srv in (self._http, self._bin):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        self._http = self._bin = None
        for c in list(self._clients):
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self._clients.clear()

    # ------------------------------------------------------------------ playing
    def _load(self, steps, n_runs: int) -> None:
        self.has_sequence, self.streams = True, self.streams + 1
        if self.trigger_start == 0:
            self._play(steps, n_runs)
        else:
            self.pending, self.finished, self.streaming = (steps, n_runs), False, False

    def _play(self, steps, n_runs: int) -> None:
        """Start playing: the answer goes back at once, ``hasFinished`` turns true when the
        emulated NV has counted the photons (in the background, as the hardware plays)."""
        self.streaming, self.finished = True, False
        if n_runs < 0:  # REPEAT_INFINITELY: plays until the next command, counts nothing
            return
        token = self._token = object()

        def play():
            try:
                self.nv.play(steps, n_runs)
            except Exception:  # noqa: BLE001 - an unplayable pattern: nothing counted
                log.exception("%s: cannot play the sequence", self.name)
            if self._token is token:
                self.streaming, self.finished = False, True

        threading.Thread(target=play, daemon=True, name="pulsestreamer-play").start()

    # ------------------------------------------------------------------ JSON-RPC
    def handle_jsonrpc(self, body: bytes) -> bytes:
        try:
            req = json.loads(body)
            rid, method, params = req.get("id"), req["method"], req.get("params", [])
        except (ValueError, KeyError, AttributeError):
            return json.dumps({"jsonrpc": "2.0", "id": None,
                               "error": {"code": -32700, "message": "Parse error"}}).encode()
        delay = self.faults.take("delay")
        if delay:
            time.sleep(delay)
        if self.faults.take("garble") is not None:
            return b"\x8f{garbled"
        if self.faults.take("error") is not None:
            err = {"code": -32000, "message": "sequence memory error (emulated fault)"}
            return json.dumps({"jsonrpc": "2.0", "id": rid, "error": err}).encode()
        try:
            result = self.call(method, params)
        except (TypeError, ValueError, KeyError) as exc:
            err = {"code": -32602, "message": f"{method}: {exc}"}
            return json.dumps({"jsonrpc": "2.0", "id": rid, "error": err}).encode()
        except AttributeError:
            err = {"code": -32601, "message": f"Method not found: {method}"}
            return json.dumps({"jsonrpc": "2.0", "id": rid, "error": err}).encode()
        return json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()

    def call(self, method: str, params: list):
        if method in ("getSerial", "getFPGAID"):
            return self.serial if method == "getSerial" else "0x2a0000000001"
        if method == "getFirmwareVersion":
            return FIRMWARE
        if method == "getHardwareVersion":
            return "1.0 (emulated)"
        if method in ("isRunning", "reset", "forceFinal", "constant", "rearm"):
            if method in ("reset", "forceFinal", "constant"):
                self.pending, self.streaming, self.finished = None, False, True
                self._token = None
            if method == "reset":
                self.power_on_reset()
            return 0 if method != "isRunning" else True
        if method == "stream":
            data = base64.b64decode(params[0])
            steps = np.frombuffer(data, dtype=STEP)
            self._load(steps.tolist(), int(params[1]))
            return 0
        if method == "setTrigger":
            self.trigger_start, self.trigger_rearm = int(params[0]), int(params[1])
            return 0
        if method == "getTriggerStart":
            return self.trigger_start
        if method == "getTriggerRearm":
            return self.trigger_rearm
        if method == "startNow":
            if self.pending is not None:
                steps, n = self.pending
                self.pending = None
                self._play(steps, n)
            return 0
        if method == "hasFinished":
            return bool(self.finished)
        if method == "isStreaming":
            return bool(self.streaming)
        if method == "hasSequence":
            return bool(self.has_sequence)
        if method == "getUnderflow":
            return 0
        raise AttributeError(method)

    # ------------------------------------------------------------------ binary
    def handle_binary(self, sock) -> bool:
        head = _recv_exactly(sock, 32)
        if head is None:
            return False
        magic, cmd_id, command, _, length, _ = struct.unpack("<4I2Q", head)
        payload = _recv_exactly(sock, length) if length else b""
        if magic != MAGIC or payload is None:
            return False
        delay = self.faults.take("delay")
        if delay:
            time.sleep(delay)
        if self.faults.take("garble") is not None:
            sock.sendall(b"\x8f garbled answer of the emulated Pulse Streamer!")
            return True
        status = 0
        if self.faults.take("error") is not None:
            status = 7
        elif command == 0x0:
            n_runs, n_steps = struct.unpack_from("<qQ", payload, 0)
            steps = np.frombuffer(payload, dtype=STEP, count=n_steps, offset=32)
            self._load(steps.tolist(), int(n_runs))
        else:
            status = 1  # slot uploads (0x100) are not emulated
        sock.sendall(struct.pack("<4I2Q", MAGIC, cmd_id, status, 0, 0, 0))
        return True


def _recv_exactly(sock, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)
