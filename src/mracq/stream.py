"""Live document streams over 0MQ: publisher, proxy and subscriber, without pickle.

Every document a session's RunEngine emits can be published (``make_session(publish=...)``)
to a proxy (``mracq proxy``), which forwards it to any number of subscribers: a
reconstruction worker on a GPU machine (``mracq worker vqns|cosy|mrfm``), a live plot on a
laptop, or bluesky's own ``RemoteDispatcher`` given ``deserializer=mracq.stream.decode``.

Wire format: one 0MQ message per document, ``prefix + b" " + name + b" " + body``, the
framing of ``bluesky.callbacks.zmq``. The body is msgpack (default) or JSON; numpy arrays
travel as a msgpack extension (dtype, shape, raw bytes: exact) or, in JSON, as nested
lists. :func:`decode` tells the two apart by the first byte and never unpickles: object
arrays are refused on both sides.

Addresses default to loopback: publishers connect to ``tcp://127.0.0.1:5577`` (the
proxy's input), subscribers to ``tcp://127.0.0.1:5578`` (its output). A bare port means
127.0.0.1; listening on another interface has to be asked for by address.

Delivery: publishers and subscribers keep up to ``hwm`` (100 000) messages queued each way
instead of 0MQ's 1000, so a subscriber that is busy reconstructing does not lose events
while the acquisition runs ahead. A subscriber only receives what is published after it
has connected (0MQ PUB/SUB): start workers before the plan.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_IN",
    "DEFAULT_OUT",
    "DocumentPublisher",
    "DocumentSubscriber",
    "StreamProxy",
    "decode",
    "encode",
    "normalize_address",
]

logger = logging.getLogger(__name__)

DEFAULT_IN = "tcp://127.0.0.1:5577"
DEFAULT_OUT = "tcp://127.0.0.1:5578"
HWM = 100_000
_NDARRAY_EXT = 42
_FORMATS = ("msgpack", "json")


# -- encoding ---------------------------------------------------------------------------

def _check_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.kind == "V":
        raise TypeError(f"arrays of dtype {dtype} cannot be streamed (only plain numeric, "
                        "bool and string arrays: no pickle on the wire)")


def _msgpack_default(obj):
    import msgpack

    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        arr = np.ascontiguousarray(obj)
        return msgpack.ExtType(_NDARRAY_EXT, msgpack.packb(
            [arr.dtype.str, list(arr.shape), arr.tobytes()], use_bin_type=True))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot stream an object of type {type(obj).__name__}")


def _msgpack_ext(code, data):
    import msgpack

    if code != _NDARRAY_EXT:
        return msgpack.ExtType(code, data)
    dtype, shape, raw = msgpack.unpackb(data, raw=False)
    dt = np.dtype(dtype)
    _check_dtype(dt)
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot stream an object of type {type(obj).__name__}")


def encode(doc: dict, fmt: str = "msgpack") -> bytes:
    """Serialize one document for the wire.

    Parameters
    ----------
    doc : dict
        A Bluesky document (numpy arrays and scalars allowed anywhere inside).
    fmt : {"msgpack", "json"}
        msgpack keeps arrays exact (dtype and shape); JSON turns them into lists.

    Returns
    -------
    bytes

    Raises
    ------
    TypeError
        An object that is neither JSON-like nor a numeric/string numpy array.
    """
    if fmt == "msgpack":
        import msgpack

        return msgpack.packb(doc, default=_msgpack_default, use_bin_type=True)
    if fmt == "json":
        return json.dumps(doc, default=_json_default, separators=(",", ":"),
                          allow_nan=True).encode()
    raise ValueError(f"unknown stream format {fmt!r}; use one of {', '.join(_FORMATS)}")


def decode(data: bytes) -> dict:
    """The document of one message body, msgpack or JSON (told apart by the first byte).

    A document is a map: msgpack maps start with 0x80-0x8f, 0xde or 0xdf, JSON objects with
    ``{`` (or whitespace). Never unpickles.
    """
    data = bytes(data)
    if data[:1] in (b"{", b" ", b"\n", b"\t", b"\r"):
        return json.loads(data)
    import msgpack

    doc = msgpack.unpackb(data, raw=False, ext_hook=_msgpack_ext, strict_map_key=False)
    if not isinstance(doc, dict):
        raise ValueError(f"a document is a map, got {type(doc).__name__}")
    return doc


# -- addresses ----------------------------------------------------------------------------

def normalize_address(address: str | int | None, default: str = DEFAULT_IN) -> str:
    """A 0MQ endpoint from a port, ``host:port`` or a full endpoint; loopback by default.

    ``5577`` -> ``tcp://127.0.0.1:5577``; ``"host:5577"`` -> ``tcp://host:5577``;
    ``"localhost:5577"`` -> ``tcp://127.0.0.1:5577``; ``"tcp://..."``/``"ipc://..."`` kept.
    """
    if address is None or address == "":
        return default
    if isinstance(address, int) or (isinstance(address, str) and address.isdigit()):
        port = int(address)
        if not 0 <= port < 65536:
            raise ValueError(f"port {port} is out of range")
        return f"tcp://127.0.0.1:{port}"
    address = str(address)
    if "://" not in address:
        if ":" not in address:
            raise ValueError(f"0MQ address {address!r}: give a port, host:port or tcp://host:port")
        address = "tcp://" + address
    return address.replace("tcp://localhost:", "tcp://127.0.0.1:")


def _is_loopback(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return True  # ipc:// and inproc:// never leave the machine
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


# -- publisher ------------------------------------------------------------------------------

class DocumentPublisher:
    """A RunEngine callback that publishes every document to a proxy (``RE.subscribe(pub)``).

    Parameters
    ----------
    address : str or int
        The proxy's input (default ``tcp://127.0.0.1:5577``).
    prefix : bytes
        Tag of this publisher's messages (no spaces); subscribers may filter on it.
    fmt : {"msgpack", "json"}
        Body encoding.
    hwm : int
        Messages kept queued while the proxy is slow or away.
    wait : float
        Seconds to wait at start for the proxy to subscribe (0MQ drops what a PUB socket
        sends before its peer has subscribed). If none answers in that time a warning is
        logged and documents are dropped until a proxy appears.

    Notes
    -----
    The socket is an XPUB connected to the proxy: the proxy's subscription arrives as a
    message, which is how the publisher knows that it is heard. Sending never blocks the
    RunEngine; :meth:`close` waits up to ``linger`` s for queued messages to leave.
    """

    def __init__(self, address: str | int | None = DEFAULT_IN, *, prefix: bytes = b"",
                 fmt: str = "msgpack", hwm: int = HWM, wait: float = 2.0,
                 linger: float = 5.0):
        import zmq

        if isinstance(prefix, str):
            prefix = prefix.encode()
        if b" " in prefix:
            raise ValueError(f"prefix {prefix!r} may not contain spaces")
        if fmt not in _FORMATS:
            raise ValueError(f"unknown stream format {fmt!r}; use one of {', '.join(_FORMATS)}")
        self.address = normalize_address(address, DEFAULT_IN)
        self.prefix = bytes(prefix)
        self.fmt = fmt
        self.sent = 0
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.SNDHWM, int(hwm))
        self._socket.setsockopt(zmq.LINGER, int(linger * 1000))
        self._socket.connect(self.address)
        self.connected = self._wait_for_subscriber(wait)
        if not self.connected:
            logger.warning("no 0MQ proxy answered at %s within %.1f s: documents are dropped "
                           "until one runs (start it with `mracq proxy`)", self.address, wait)

    def _wait_for_subscriber(self, timeout: float) -> bool:
        import zmq

        if timeout <= 0:
            return False
        if self._socket.poll(int(timeout * 1000), zmq.POLLIN):
            self._socket.recv()  # the subscription message (b"\x01" + topic)
            return True
        return False

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self._socket.send(b" ".join([self.prefix, name.encode(), encode(doc, self.fmt)]))
        self.sent += 1

    def close(self) -> None:
        """Close the socket (waits up to ``linger`` s for queued messages; idempotent)."""
        if self._socket.closed:
            return
        self._socket.close()
        self._context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- proxy ----------------------------------------------------------------------------------

class StreamProxy:
    """Forward every message from publishers (``in_address``) to subscribers (``out_address``).

    Parameters
    ----------
    in_address, out_address : str or int
        Where to listen (default ``tcp://127.0.0.1:5577`` and ``:5578``); port 0 picks a
        free port (see :attr:`in_address` / :attr:`out_address` after construction).
    hwm : int
        Messages queued per peer before 0MQ drops.

    Notes
    -----
    :meth:`start` blocks until :meth:`stop` (from another thread) or Ctrl-C.
    """

    def __init__(self, in_address: str | int | None = DEFAULT_IN,
                 out_address: str | int | None = DEFAULT_OUT, *, hwm: int = HWM):
        import zmq

        self._context = zmq.Context()
        try:
            self._front = self._bind(zmq.SUB, normalize_address(in_address, DEFAULT_IN), hwm)
            self._front.setsockopt(zmq.SUBSCRIBE, b"")  # everything, so publishers are heard
            self._back = self._bind(zmq.PUB, normalize_address(out_address, DEFAULT_OUT), hwm)
            self._control = self._context.socket(zmq.PAIR)
            self._control.bind(f"inproc://mracq-proxy-{id(self)}")
        except BaseException:
            self._context.destroy(linger=0)
            raise
        self.in_address = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.out_address = self._back.getsockopt_string(zmq.LAST_ENDPOINT)
        self.closed = False

    def _bind(self, kind, endpoint, hwm):
        import zmq

        sock = self._context.socket(kind)
        sock.setsockopt(zmq.SNDHWM, int(hwm))
        sock.setsockopt(zmq.RCVHWM, int(hwm))
        sock.setsockopt(zmq.LINGER, 0)
        if not _is_loopback(endpoint):
            logger.warning("0MQ proxy listening beyond loopback on %s", endpoint)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot listen on {endpoint}: {exc}") from exc
        return sock

    def start(self) -> None:
        """Forward until :meth:`stop` is called (or the process is interrupted)."""
        import zmq

        if self.closed:
            raise RuntimeError("this proxy has been stopped; make a new one")
        ctl = self._context.socket(zmq.PAIR)
        ctl.connect(f"inproc://mracq-proxy-{id(self)}")
        logger.info("0MQ proxy: publishers -> %s, subscribers <- %s", self.in_address,
                    self.out_address)
        try:
            zmq.proxy_steerable(self._front, self._back, None, ctl)
        except zmq.ContextTerminated:
            pass
        finally:
            ctl.close(linger=0)
            self._close()

    def stop(self) -> None:
        """Ask a running :meth:`start` to return (thread-safe, idempotent)."""
        if not self.closed:
            self._control.send(b"TERMINATE")

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s in (self._front, self._back, self._control):
            s.close(linger=0)
        self._context.term()

    def __repr__(self):
        return f"StreamProxy({self.in_address!r}, {self.out_address!r})"


# -- subscriber -------------------------------------------------------------------------

class DocumentSubscriber:
    """Receive documents from a proxy (``out_address``) one at a time.

    Parameters
    ----------
    address : str or int
        The proxy's output (default ``tcp://127.0.0.1:5578``).
    prefixes : sequence of bytes, optional
        Keep only messages with one of these prefixes (default: all).
    ignore_prefixes : sequence of bytes
        Drop messages with these prefixes (e.g. a worker's own output coming back).
    hwm : int
        Messages queued before 0MQ drops.
    """

    def __init__(self, address: str | int | None = DEFAULT_OUT, *, prefixes=None,
                 ignore_prefixes=(), hwm: int = HWM):
        import zmq

        self.address = normalize_address(address, DEFAULT_OUT)
        self.prefixes = None if prefixes is None else {bytes(p) for p in prefixes}
        self.ignore = {bytes(p) for p in ignore_prefixes}
        self.received = 0
        self.dropped = 0
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, int(hwm))
        self._socket.setsockopt(zmq.LINGER, 0)
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._socket.connect(self.address)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """Wait until the connection to the proxy stands (its subscription sent)."""
        import zmq

        if self._monitor is None:
            return True
        ok = bool(self._monitor.poll(int(timeout * 1000), zmq.POLLIN))
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._monitor = None
        if ok:
            time.sleep(0.1)  # let the proxy register the subscription
        return ok

    def recv(self, timeout: float | None = None) -> tuple[bytes, str, dict] | None:
        """The next ``(prefix, name, document)``, or None when ``timeout`` s pass first.

        Malformed messages are logged and skipped (counted in :attr:`dropped`).
        """
        import zmq

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(wait, zmq.POLLIN):
                return None
            msg = self._socket.recv()
            try:
                prefix, name, body = msg.split(b" ", 2)
                if (self.prefixes is not None and prefix not in self.prefixes) \
                        or prefix in self.ignore:
                    continue
                doc = decode(body)
                name = name.decode()
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                self.dropped += 1
                logger.warning("dropping an undecodable 0MQ message (%d bytes): %s",
                               len(msg), exc)
                continue
            self.received += 1
            return prefix, name, doc

    def close(self) -> None:
        if self._socket.closed:
            return
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
        self._socket.close(linger=0)
        self._context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
