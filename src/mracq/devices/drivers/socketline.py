"""A TCP text client: lines out, lines or exact byte counts in (the MRFM drivers' wire)."""

from __future__ import annotations

import socket


class GarbledReply(ValueError):
    """A reply that is not in the protocol."""


class LineSocket:
    """``host:port`` over TCP; ``timeout`` s per read; lines end in ``terminator``."""

    def __init__(self, address: str, timeout: float, terminator: bytes = b"\n"):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {address!r} must be host:port")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.terminator = terminator
        self._buf = b""

    def write(self, text: str) -> None:
        self.sock.sendall(text.encode() + self.terminator)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("connection closed by the instrument")
        self._buf += chunk

    def readline(self) -> str:
        """One line without its end (LF; a CR before it is dropped)."""
        while b"\n" not in self._buf:
            self._fill()
        raw, self._buf = self._buf.split(b"\n", 1)
        try:
            return raw.rstrip(b"\r").decode("ascii")
        except UnicodeDecodeError:
            raise GarbledReply(f"garbled reply {raw[:32]!r}") from None

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def query(self, text: str) -> str:
        self.write(text)
        return self.readline()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
