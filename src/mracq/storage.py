"""Tiled storage: an embedded catalog in a data folder, or a Tiled server.

Embedded layout of a data folder::

    <data_dir>/catalog.db        SQLite catalog (metadata, one node per run)
    <data_dir>/storage.duckdb    tabular event data (scalars)
    <data_dir>/data/             zarr arrays (every array-valued event field)
    <data_dir>/runengine-md/     RunEngine metadata (scan_id), see :mod:`mracq.session`

The embedded catalog is served in-process (a Tiled app behind an ASGI test client): no
network, no server process.  DuckDB allows one process at a time per folder; a second
process opening the same folder gets :class:`StorageBusyError` (serve the folder with
``tiled serve catalog`` and pass its URL to share it).

Runs are written by ``bluesky_tiled_plugins.TiledWriter`` with ``max_array_size=0``, so
every array field, however short, is stored as an array (with the default, arrays of
<= 16 elements are stored in the SQL table and come back as strings).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RunNotFoundError",
    "StorageBusyError",
    "close_catalog",
    "default_data_dir",
    "get_run",
    "list_runs",
    "open_catalog",
    "run_summary",
    "run_table",
    "subscribe_writer",
]

logger = logging.getLogger(__name__)

CATALOG_FILE = "catalog.db"
TABLE_FILE = "storage.duckdb"
ARRAY_DIR = "data"


class RunNotFoundError(LookupError):
    """No stored run matches a reference (uid, uid prefix or scan_id)."""


class StorageBusyError(RuntimeError):
    """The data folder is held by another process."""


def default_data_dir(config=None) -> Path:
    """The data folder to use when none is given.

    Order: env ``MRACQ_DATA_DIR``, else ``storage.data_dir`` of ``config`` (default:
    :func:`mracq.config.load_config`, which honours ``MRACQ_CONFIG``), else
    ``$XDG_DATA_HOME/mracq``, else ``~/.local/share/mracq``.

    Parameters
    ----------
    config : mracq.config.LabConfig, optional

    Returns
    -------
    pathlib.Path
        Absolute; not created.
    """
    env = os.environ.get("MRACQ_DATA_DIR")
    if env:
        return Path(env).expanduser().absolute()
    if config is None:
        from .config import load_config

        config = load_config()
    if config.storage.get("data_dir"):
        return Path(config.storage["data_dir"]).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "mracq").absolute()


def _check_not_busy(table_file: Path) -> None:
    if not table_file.exists():
        return
    import duckdb

    try:
        duckdb.connect(str(table_file)).close()
    except duckdb.Error as exc:
        raise StorageBusyError(
            f"the data folder {table_file.parent} is in use by another process ({exc}). "
            "Close that session, or serve the folder with `tiled serve catalog` and connect "
            "with a URL to share it."
        ) from exc


def _init_catalog_db(db: Path) -> bool:
    """Create and stamp a fresh SQLite catalog in-process; False if that is not possible.

    ``tiled.catalog.from_uri(..., init_if_not_exists=True)`` runs ``tiled catalog init``
    in a subprocess (~4 s, a second interpreter importing tiled); this does what that
    command does (create the tables, stamp the alembic revision) in this process, into a
    temporary file renamed into place, so a crash never leaves a half-made catalog.
    """
    try:
        from sqlalchemy.ext.asyncio import create_async_engine
        from tiled.alembic_utils import stamp_head
        from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
        from tiled.catalog.core import initialize_database
    except ImportError as exc:  # pragma: no cover - other tiled versions
        logger.debug("in-process catalog init unavailable: %s", exc)
        return False
    tmp = db.with_name(db.name + ".init")
    tmp.unlink(missing_ok=True)
    uri = f"sqlite+aiosqlite:///{tmp}"

    async def create():
        engine = create_async_engine(uri)
        try:
            await initialize_database(engine)
        finally:
            await engine.dispose()

    errors = []

    def work():  # own thread: asyncio.run must not meet a running loop (IPython, Jupyter)
        try:
            asyncio.run(create())
            stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        except Exception as exc:  # noqa: BLE001 - fall back to tiled's own init
            errors.append(exc)

    thread = threading.Thread(target=work, name="mracq-catalog-init")
    thread.start()
    thread.join()
    if errors:
        logger.warning("in-process catalog init failed (%s); using tiled's", errors[0])
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, db)
    return True


def open_catalog(data_dir: str | os.PathLike | None = None, *, url: str | None = None,
                 api_key: str | None = None):
    """Open a Tiled catalog for writing and reading runs.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder of the embedded catalog (created if missing).  Default:
        :func:`default_data_dir`.  Ignored when ``url`` is given.
    url : str, optional
        A Tiled server (e.g. ``http://host:8000``) instead of the embedded catalog.
    api_key : str, optional
        API key for ``url``; default env ``TILED_API_KEY``.

    Returns
    -------
    tiled.client.container.Container
        The root of the catalog.  Close it with :func:`close_catalog` (an unclosed
        embedded catalog is closed at interpreter exit).

    Raises
    ------
    StorageBusyError
        The embedded folder is in use by another process.
    """
    if url:
        from tiled.client import from_uri

        key = api_key or os.environ.get("TILED_API_KEY") or None
        logger.info("connecting to Tiled server %s", url)
        return from_uri(url, api_key=key)

    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.server.app import build_app

    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    root = root.absolute()
    (root / ARRAY_DIR).mkdir(parents=True, exist_ok=True)
    _check_not_busy(root / TABLE_FILE)
    db = root / CATALOG_FILE
    # init_if_not_exists starts a `tiled catalog init` subprocess (~4 s) even when the
    # database exists: only a fresh folder needs an init, done in-process if possible.
    fresh = not (db.exists() and db.stat().st_size > 0)
    if fresh and _init_catalog_db(db):
        fresh = False
    adapter = catalog_from_uri(
        f"sqlite:///{db}",
        writable_storage=[f"file://{root / ARRAY_DIR}", f"duckdb:///{root / TABLE_FILE}"],
        init_if_not_exists=fresh,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient-with-httpx deprecation
        context = Context.from_app(build_app(adapter))
    logger.info("opened embedded catalog in %s", root)
    return from_context(context)


def close_catalog(client) -> None:
    """Close a catalog opened by :func:`open_catalog` (idempotent)."""
    context = getattr(client, "context", None)
    if context is None:
        return
    try:
        context.close()
    except RuntimeError as exc:  # already closed
        logger.debug("closing catalog: %s", exc)


def subscribe_writer(RE, client) -> int:
    """Subscribe a ``TiledWriter`` to a RunEngine.

    The writer keeps the default batching (events are cached and written in bulk at
    10000 events or at the stop document); the RunEngine dispatches documents
    synchronously, so a run is completely stored when ``RE(plan)`` returns (also after
    an abort or failure, which still emit a stop document).  Events of a process that is
    killed mid-run are lost.

    Parameters
    ----------
    RE : bluesky.RunEngine
    client : tiled.client.container.Container
        From :func:`open_catalog`.

    Returns
    -------
    int
        The subscription token (``RE.unsubscribe(token)``).
    """
    from bluesky_tiled_plugins import TiledWriter

    return RE.subscribe(TiledWriter(client, max_array_size=0))


def run_summary(run) -> dict[str, Any]:
    """One line of :func:`list_runs` for a run client."""
    start = run.metadata.get("start", {}) or {}
    stop = run.metadata.get("stop") or {}
    num = stop.get("num_events") or {}
    t = start.get("time")
    return {
        "uid": start.get("uid"),
        "scan_id": start.get("scan_id"),
        "plan_name": start.get("plan_name"),
        "time": t,
        "date": (datetime.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")
                 if t is not None else None),
        "num_events": num.get("primary", sum(num.values())) if stop else None,
        "exit_status": stop.get("exit_status"),
    }


def list_runs(client, limit: int = 20) -> list[dict[str, Any]]:
    """The newest stored runs, newest first.

    Parameters
    ----------
    client : tiled.client.container.Container
    limit : int
        Most runs to return.

    Returns
    -------
    list of dict
        ``uid``, ``scan_id``, ``plan_name``, ``time`` (start, s since the epoch),
        ``date`` (local ISO), ``num_events`` (primary stream; None for a run without a
        stop document), ``exit_status`` (None while running or if the process died).
    """
    if limit <= 0:
        return []
    # Tiled slices count from the end only with step -1: newest first, `limit` of them.
    return [run_summary(r) for r in client.values()[-1:-int(limit) - 1:-1]]


def get_run(client, ref):
    """A stored run by uid, uid prefix or scan_id.

    Parameters
    ----------
    client : tiled.client.container.Container
    ref : str or int
        A full uid, a uid prefix (>= 5 characters, unique), a positive scan_id (the
        newest run with that scan_id) or a negative index (-1: newest run).  Strings of
        digits (optionally with a leading ``-``) count as integers.

    Returns
    -------
    bluesky_tiled_plugins.clients.bluesky_run.BlueskyRunV3

    Raises
    ------
    RunNotFoundError
        Nothing (or more than one run, for a prefix) matches.
    """
    from tiled.queries import Eq, Like

    if isinstance(ref, str) and ref.strip().lstrip("-").isdigit():
        ref = int(ref.strip())
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        ref = int(ref)
        if ref < 0:
            n = len(client)
            if -ref > n:
                raise RunNotFoundError(f"run {ref} does not exist: the catalog holds {n} runs")
            return client.values()[ref]
        if ref == 0:
            raise RunNotFoundError("scan_id 0 does not exist (scan ids start at 1)")
        found = client.search(Eq("start.scan_id", ref)).values()
        if len(found) == 0:
            raise RunNotFoundError(f"no run with scan_id {ref}")
        return found.last()
    if not isinstance(ref, str) or not ref:
        raise RunNotFoundError(f"a run reference is a uid, a uid prefix or a scan_id, "
                               f"not {ref!r}")
    if len(ref) == 36 and ref in client:
        return client[ref]
    if len(ref) < 5:
        raise RunNotFoundError(f"uid prefix {ref!r} is too short (at least 5 characters)")
    found = client.search(Like("start.uid", f"{ref}%")).values().head(2)
    if not found:
        raise RunNotFoundError(f"no run with uid starting {ref!r}")
    if len(found) > 1:
        raise RunNotFoundError(f"uid prefix {ref!r} matches more than one run; "
                               "give more characters")
    return found[0]


def run_table(run, stream: str = "primary") -> dict[str, np.ndarray]:
    """The event data of one stream as numpy arrays.

    Parameters
    ----------
    run : BlueskyRunV3
        From :func:`get_run`.
    stream : str
        Stream name.

    Returns
    -------
    dict of str to numpy.ndarray
        ``time`` and ``seq_num`` plus one column per data key, each with the event
        index first (shape ``(n_events, *shape)``); per-key timestamps are left out.
    """
    if stream not in run:
        raise KeyError(f"run {run.metadata['start']['uid'][:8]} has no stream {stream!r}; "
                       f"streams: {', '.join(run) or 'none'}")
    node = run[stream]
    data_keys = node.metadata.get("data_keys") or {}
    out = {}
    for key in node:
        wanted = key in data_keys or key in ("time", "seq_num")
        if wanted or (not data_keys and not key.startswith("ts_")):
            out[key] = np.asarray(node[key].read())
    return out
