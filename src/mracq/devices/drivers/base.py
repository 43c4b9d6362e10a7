"""Errors and reconnection shared by the vendor drivers."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class InstrumentError(RuntimeError):
    """An instrument failed a command: the message names both.

    Attributes
    ----------
    instrument : str
        Name, model and address, e.g. ``"mw (rs_sgs100a at TCPIP0::...::SOCKET)"``.
    command : str
        What was sent (SCPI command, RPC name).
    """

    def __init__(self, instrument: str, command: str, reason: str):
        self.instrument, self.command, self.reason = instrument, command, reason
        super().__init__(f"{instrument}: {command}: {reason}")


class Reconnecting:
    """A driver that opens its vendor client lazily and again after any failure.

    Subclasses implement ``_open()`` (returns the client) and ``_close(client)``; each
    vendor call goes through :meth:`call`.
    """

    label = "instrument"

    def __init__(self):
        self._client = None
        self._failed = False

    def _open(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self, client) -> None:
        """Release ``client`` (errors ignored: it may be dead already)."""

    def _after_reconnect(self) -> None:
        """Restore state after a reconnection (override)."""

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = self._open()
            except InstrumentError:
                raise
            except Exception as exc:
                raise InstrumentError(self.label, "connect", _reason(exc)) from exc
            if self._failed:
                self._failed = False
                log.warning("%s: reconnected", self.label)
                self._after_reconnect()
        return self._client

    def drop(self) -> None:
        """Forget the connection; the next call reconnects."""
        client, self._client = self._client, None
        if client is not None:
            try:
                self._close(client)
            except Exception:  # noqa: BLE001 - a dead client may fail to close
                log.debug("%s: close failed", self.label, exc_info=True)

    def call(self, command: str, fn, *args, idempotent: bool = False):
        """``fn(client, *args)``; any failure -> :class:`InstrumentError` and a reconnect.

        With ``idempotent``, a connection that turns out dead on its first use since the
        last call (the instrument was power-cycled between plans) is reopened and ``fn``
        tried once more.
        """
        fresh = self._client is None
        client = self._connect(command)
        try:
            return fn(client, *args)
        except Exception as exc:
            if not (idempotent and not fresh and _connection_lost(exc)):
                return self._raise(command, exc)
            log.warning("%s: connection lost (%s); reconnecting", self.label, _reason(exc))
            self._failed = True
            self.drop()
        client = self._connect(command)
        try:
            return fn(client, *args)
        except Exception as exc:
            return self._raise(command, exc)

    def _connect(self, command: str):
        try:
            return self.client
        except InstrumentError as exc:
            if exc.command != "connect":
                raise
            raise InstrumentError(self.label, command, f"cannot connect ({exc.reason})") \
                from exc

    def _raise(self, command, exc):
        self._failed = True
        self.drop()
        if isinstance(exc, InstrumentError):
            raise exc
        raise InstrumentError(self.label, command, _reason(exc)) from exc

    def close(self) -> None:
        self.drop()


def _connection_lost(exc: BaseException) -> bool:
    """A dead connection (reset, broken pipe, closed by the peer), not a timeout."""
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
        return True
    name = type(exc).__name__
    text = str(exc)
    return name == "VisaIOError" and ("CONN_LOST" in text or "connection" in text.lower())


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
