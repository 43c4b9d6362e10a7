"""A ready-to-use acquisition session: RunEngine, catalog, devices, clock.

>>> from mracq.session import make_session
>>> with make_session() as s:                       # doctest: +SKIP
...     s.RE(some_plan(s.devices["nv"], ...))

The RunEngine keeps its metadata (``scan_id`` among it) in ``<data_dir>/runengine-md.json``
(:class:`JSONMetadata`: plain JSON, written atomically at every change), so scan ids
continue across restarts.  A folder written by older versions (bluesky's PersistentDict in
``runengine-md/``, msgpack) is read once without pickle and renamed
``runengine-md.migrated``.  With ``url=`` runs go to a Tiled server (the scale-up path)
while the RunEngine metadata and the journal stay in the local data folder.

A session owns its data folder from the moment it opens (:class:`mracq.storage.FolderLock`)
until it closes or its process dies; at open it first replays into the catalog any run a
killed process left unfinished (:func:`mracq.storage.recover_journals`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from .config import LabConfig, load_config, validate_config
from .storage import (
    JOURNAL_DIR,
    FolderLock,
    _json_default,
    close_catalog,
    default_data_dir,
    open_catalog,
    recover_journals,
    subscribe_writer,
)

__all__ = ["Session", "make_session"]

logger = logging.getLogger(__name__)

MD_FILE = "runengine-md.json"
OLD_MD_DIR = "runengine-md"


class JSONMetadata(MutableMapping):
    """A dict kept in a JSON file, rewritten atomically (temp file, fsync, rename) on
    every change.  Values must be JSON-serializable (numpy scalars and arrays are
    converted); nested containers are written when their top-level key is set again.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._data: dict = {}
        if self.path.exists():
            self._data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self._data, dict):
                raise ValueError(f"{self.path}: RunEngine metadata must be a JSON object")

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        text = json.dumps(self._data, default=_json_default, indent=1, sort_keys=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def flush(self) -> None:
        """Write the file (nested containers changed in place included)."""
        self._write()

    def __getitem__(self, key):
        return self._data[key]

    def __setitem__(self, key, value):
        json.dumps(value, default=_json_default)  # refuse what cannot be stored, at once
        self._data[key] = value
        self._write()

    def __delitem__(self, key):
        del self._data[key]
        self._write()

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"JSONMetadata({self.path}, {self._data!r})"


def _plain(value):
    """value if it is plain JSON data (no numpy payloads, str keys), else raise ValueError."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v) for k, v in value.items()}
    raise ValueError(f"not plain data: {type(value).__name__}")


def migrate_persistent_dict(old_dir: Path) -> dict:
    """Read bluesky's PersistentDict folder without pickle: plain msgpack, plain values.

    Files are ``<quoted key>#<n>``; a value that is not plain data (numpy payloads, which
    PersistentDict may decode with pickle) is left out with a warning.
    """
    import msgpack

    out = {}
    for f in sorted(Path(old_dir).iterdir(), key=lambda f: f.stat().st_mtime):
        if not f.is_file():
            continue
        key = unquote(f.name.split("#")[0])
        try:
            out[key] = _plain(msgpack.unpackb(f.read_bytes(), raw=False, strict_map_key=False))
        except Exception as exc:  # noqa: BLE001 - skip anything not plain, never unpickle
            logger.warning("RunEngine metadata %r in %s not migrated (%s)", key, old_dir, exc)
    return out


def _open_md(data_dir: Path) -> JSONMetadata:
    path = data_dir / MD_FILE
    old = data_dir / OLD_MD_DIR
    if not path.exists() and old.is_dir():
        md = JSONMetadata(path)
        md._data = migrate_persistent_dict(old)
        md.flush()
        os.replace(old, data_dir / (OLD_MD_DIR + ".migrated"))
        logger.info("RunEngine metadata of %s moved to %s (JSON)", data_dir, path.name)
        return md
    return JSONMetadata(path)


@dataclass
class Session:
    """What :func:`make_session` builds.

    Attributes
    ----------
    RE : bluesky.RunEngine
        ``call_returns_result=True``, persistent ``RE.md``, TiledWriter subscribed.
    catalog : tiled.client.container.Container
        Root of the catalog the runs are written to.
    devices : dict of str to ophyd.Device
    clock : VirtualClock or None
        Simulated hardware time (s) shared by the simulated devices.
    config : mracq.config.LabConfig
    data_dir : pathlib.Path
        Local data folder (embedded catalog and RunEngine metadata).
    url : str or None
        The Tiled server, when not embedded.
    rng : numpy.random.Generator
        The generator given to the simulated devices.
    publisher : mracq.stream.DocumentPublisher or None
        Publishes every document to a 0MQ proxy (``make_session(publish=...)``).
    """

    RE: Any
    catalog: Any
    devices: dict
    clock: Any
    config: LabConfig
    data_dir: Path
    url: str | None = None
    rng: np.random.Generator | None = None
    recovered: list[str] = field(default_factory=list)
    publisher: Any = None
    tokens: list[int] = field(default_factory=list, repr=False)
    closed: bool = field(default=False, repr=False)
    lock: Any = field(default=None, repr=False)

    def close(self) -> None:
        """Unsubscribe callbacks, write RunEngine metadata, close the catalog (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for token in self.tokens:
            self.RE.unsubscribe(token)
        self.tokens.clear()
        if self.publisher is not None:
            self.publisher.close()
        md = self.RE.md
        if hasattr(md, "flush"):
            md.flush()
        self.RE.md = dict(md)  # a RunEngine used after close no longer touches the folder
        close_catalog(self.catalog)
        if self.lock is not None:
            self.lock.release()
        logger.info("session on %s closed", self.data_dir)

    @property
    def calibration(self):
        """The NV calibration runs are measured with (``PulseCalibration`` or None)."""
        return getattr(self.devices.get("nv"), "calibration", None)

    def set_calibration(self, cal) -> None:
        """Install a calibration: programs take its pulses, start documents name it."""
        from .plans.calibration import install_calibration

        install_calibration(self.RE, self.devices, cal)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _resolve_config(config) -> LabConfig:
    if isinstance(config, LabConfig):
        return config
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if isinstance(config, dict):
        return validate_config(config)
    raise TypeError(f"config must be a LabConfig, a path, a dict or None, not {config!r}")


def _add_live_feedback(RE) -> list[int]:
    from bluesky.callbacks.best_effort import BestEffortCallback

    bec = BestEffortCallback()
    bec.disable_plots()
    tokens = [RE.subscribe(bec)]
    if sys.stdout.isatty():
        from bluesky.utils import ProgressBarManager

        RE.waiting_hook = ProgressBarManager()
    return tokens


def make_session(config=None, *, data_dir: str | os.PathLike | None = None,
                 url: str | None = None, api_key: str | None = None,
                 devices: dict | None = None, interactive: bool = False,
                 clock=None, fsync_interval: float | None = 1.0, publish=None) -> Session:
    """Build a ready session.

    Steps: validate the lab configuration (nothing is created if it is invalid), take
    the data folder's lock, open the catalog, replay runs a killed process left
    unfinished (``Session.recovered``), build a ``RunEngine(call_returns_result=True)``
    with persistent metadata, subscribe a journaled ``TiledWriter``, build the devices.

    Parameters
    ----------
    config : LabConfig, str, path-like, dict or None
        Lab configuration; None: env ``MRACQ_CONFIG``, else the built-in all-sim one.
    data_dir : str or path-like, optional
        Local data folder; default :func:`mracq.storage.default_data_dir`.
    url : str, optional
        Tiled server for the runs; default ``config.storage["url"]`` (None: embedded
        catalog in ``data_dir``).
    api_key : str, optional
        API key for ``url``; default ``config.storage["api_key"]``, else env
        ``TILED_API_KEY``.
    devices : dict of str to ophyd.Device, optional
        Use these devices instead of ``mracq.devices.build_devices(config, clock=clock,
        rng=rng)``.
    interactive : bool
        Add a live table (BestEffortCallback, plots off) and, on a terminal, progress bars.
    clock : VirtualClock, optional
        Simulated hardware clock; default a new ``mracq.sim.clock.VirtualClock`` (None if
        that module is not available and ``devices`` is given).
    fsync_interval : float or None
        Journal fsync policy for events (:class:`mracq.storage.JournalWriter`).
    publish : str, int or mracq.stream.DocumentPublisher, optional
        Also publish every document to the 0MQ proxy at this address (a port means
        127.0.0.1; ``mracq proxy`` runs one), msgpack-encoded, for workers elsewhere
        (``mracq worker``); see :mod:`mracq.stream`. Default: env ``MRACQ_PUBLISH`` (so
        every ``mracq`` command can publish), else none.

    Returns
    -------
    Session

    Raises
    ------
    mracq.config.ConfigError
        Invalid configuration (raised before anything is created).
    StorageBusyError
        The data folder is held by another session (this process or another).
    """
    cfg = _resolve_config(config)
    url = url or cfg.storage.get("url")
    api_key = api_key or cfg.storage.get("api_key")
    root = Path(data_dir).expanduser().absolute() if data_dir else default_data_dir(cfg)

    rng = np.random.default_rng(cfg.sim.get("seed"))
    if clock is None:
        try:
            from .sim.clock import VirtualClock
        except ImportError:
            if devices is None:
                raise
            logger.warning("mracq.sim.clock is not available: session without a clock")
        else:
            clock = VirtualClock()

    root.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(root)  # one owner from the moment the session opens
    catalog = session = None
    try:
        from bluesky import RunEngine

        md = _open_md(root)
        catalog = open_catalog(root, url=url, api_key=api_key, lock=False)
        recovered = recover_journals(catalog, root)
        RE = RunEngine(md=md, call_returns_result=True)
        RE.md["versions"] = dict(RE.md["versions"])  # sync the nested update to disk
        session = Session(RE=RE, catalog=catalog, devices={}, clock=clock, config=cfg,
                          data_dir=root, url=url, rng=rng, recovered=recovered, lock=lock)
        session.tokens.append(subscribe_writer(RE, catalog, journal_dir=root / JOURNAL_DIR,
                                               fsync_interval=fsync_interval))
        if publish is None:
            publish = os.environ.get("MRACQ_PUBLISH") or None
        if publish is not None:
            from .stream import DocumentPublisher

            pub = publish if callable(publish) else DocumentPublisher(publish)
            session.publisher = pub
            session.tokens.append(RE.subscribe(pub))
        if devices is None:
            from .devices import build_devices

            devices = build_devices(cfg, clock=clock, rng=rng)
        session.devices = dict(devices)
        from .plans.calibration import attach_calibration

        session.tokens.extend(attach_calibration(RE, session.devices))
        if interactive:
            session.tokens.extend(_add_live_feedback(RE))
    except BaseException:
        if session is not None and session.publisher is not None:
            session.publisher.close()
        if catalog is not None:
            close_catalog(catalog)
        lock.release()
        raise
    logger.info("session ready: data in %s, runs to %s", root, url or "embedded catalog")
    return session
