"""A ready-to-use acquisition session: RunEngine, catalog, devices, clock.

>>> from mracq.session import make_session
>>> with make_session() as s:                       # doctest: +SKIP
...     s.RE(some_plan(s.devices["nv"], ...))

The RunEngine keeps its metadata (``scan_id`` among it) in ``<data_dir>/runengine-md``, so
scan ids continue across restarts.  With ``url=`` runs go to a Tiled server (the
scale-up path) while the RunEngine metadata stays in the local data folder.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import LabConfig, load_config, validate_config
from .storage import close_catalog, default_data_dir, open_catalog, subscribe_writer

__all__ = ["Session", "make_session"]

logger = logging.getLogger(__name__)

MD_DIR = "runengine-md"

# zict (behind PersistentDict) supports one instance per folder: track them per process.
_md_lock = threading.Lock()
_md_open: set[Path] = set()


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
    publisher: Any = None
    tokens: list[int] = field(default_factory=list, repr=False)
    closed: bool = field(default=False, repr=False)

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
        _release_md(md, self.data_dir)
        self.RE.md = dict(md)  # a RunEngine used after close no longer touches the folder
        close_catalog(self.catalog)
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


def _open_md(data_dir: Path):
    from bluesky.utils import PersistentDict

    md_dir = (data_dir / MD_DIR).absolute()
    with _md_lock:
        if md_dir in _md_open:
            raise RuntimeError(
                f"a session on {data_dir} is already open in this process; close it first "
                "(its RunEngine metadata can have only one owner)")
        _md_open.add(md_dir)
    try:
        return PersistentDict(str(md_dir))
    except BaseException:
        with _md_lock:
            _md_open.discard(md_dir)
        raise


def _release_md(md, data_dir: Path) -> None:
    if hasattr(md, "flush"):
        md.flush()
    # PersistentDict writes its cache again when garbage-collected; zict's file-name map
    # of this instance is stale once another instance owns the folder, and the late
    # write then fails (FileNotFoundError in a finalizer): write now, never again.
    finalizer = getattr(md, "_finalizer", None)
    if finalizer is not None:
        finalizer.detach()
    with _md_lock:
        _md_open.discard((data_dir / MD_DIR).absolute())


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
                 clock=None, publish=None) -> Session:
    """Build a ready session.

    Steps: validate the lab configuration (nothing is created if it is invalid), open
    the catalog, build a ``RunEngine(call_returns_result=True)`` with persistent
    metadata, subscribe a ``TiledWriter``, build the devices.

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
        The data folder is in use by another process.
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
    md = _open_md(root)
    catalog = session = None
    try:
        from bluesky import RunEngine

        catalog = open_catalog(root, url=url, api_key=api_key)
        RE = RunEngine(md=md, call_returns_result=True)
        RE.md["versions"] = dict(RE.md["versions"])  # sync the nested update to disk
        session = Session(RE=RE, catalog=catalog, devices={}, clock=clock, config=cfg,
                          data_dir=root, url=url, rng=rng)
        session.tokens.append(subscribe_writer(RE, catalog))
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
        _release_md(md, root)
        if session is not None and session.publisher is not None:
            session.publisher.close()
        if catalog is not None:
            close_catalog(catalog)
        raise
    logger.info("session ready: data in %s, runs to %s", root, url or "embedded catalog")
    return session
