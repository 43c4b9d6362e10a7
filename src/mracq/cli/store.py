"""Read-only access to stored runs for ``mracq runs`` / ``mracq show``, fast.

Opening the embedded catalog through Tiled imports its server stack (FastAPI, dask,
pandas, xarray, numba through ``sparse``): 15-40 s on a loaded 2-core machine, before a
single run is listed. Reading is simpler than that: run metadata sits in the SQLite
catalog (``nodes.metadata``), scalar event columns in the DuckDB table a data source
names, arrays in the zarr folders its assets point to. :func:`open_store` reads those
directly (SQLite read-only; DuckDB and zarr only when a run's data is asked for) and
falls back to Tiled for a server URL or a layout it does not recognise.

Nothing here writes; a missing data folder or catalog is reported, never created.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from mracq.storage import summarize_documents

logger = logging.getLogger(__name__)

__all__ = ["LayoutError", "open_store"]


class LayoutError(RuntimeError):
    """The data folder is not laid out as this reader expects (use Tiled instead)."""


class StoredRun:
    """One run: ``metadata`` (``start``, ``stop``), its stream names and their tables."""

    def __init__(self, metadata: dict, streams: list[str], reader):
        self.metadata = metadata
        self.streams = streams
        self._reader = reader

    @property
    def start(self) -> dict:
        return self.metadata.get("start") or {}

    @property
    def stop(self) -> dict:
        return self.metadata.get("stop") or {}

    def __contains__(self, stream) -> bool:
        return stream in self.streams

    def table(self, stream: str = "primary") -> dict:
        """Event columns of one stream as numpy arrays (event index first)."""
        if stream not in self.streams:
            raise KeyError(f"run {self.start.get('uid', '?')[:8]} has no stream {stream!r}; "
                           f"streams: {', '.join(self.streams) or 'none'}")
        return self._reader(stream)

    def stream_metadata(self, stream: str) -> dict:
        return getattr(self, "_stream_md", {}).get(stream, {})


class LocalStore:
    """The embedded catalog of one data folder, read directly (see module docstring)."""

    def __init__(self, root: Path):
        self.root = root
        db = root / "catalog.db"
        if not db.is_file() or db.stat().st_size == 0:
            raise FileNotFoundError(str(db))
        self._db = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LayoutError(f"{db}: {exc}") from exc
        if not {"nodes", "data_sources", "assets", "data_source_asset_association"} <= tables:
            self._db.close()
            raise LayoutError(f"{db} is not a Tiled catalog this reader knows")
        self._duck = None

    # -- runs ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM nodes WHERE parent = 0").fetchone()[0]

    def _rows(self, where: str = "", params=(), order: str = "DESC", limit: int | None = None):
        sql = f"SELECT id, metadata FROM nodes WHERE parent = 0 {where} ORDER BY id {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._db.execute(sql, params).fetchall()

    def list_runs(self, limit: int = 20) -> list[dict]:
        """Newest first, as :func:`mracq.storage.list_runs` (plus ``sequence``)."""
        if limit <= 0:
            return []
        out = []
        for _, md in self._rows(limit=limit):
            md = json.loads(md)
            out.append(summarize_documents(md.get("start") or {}, md.get("stop")))
        return out

    def get_run(self, ref) -> StoredRun:
        """A run by uid, uid prefix (>= 5 characters), scan_id or -N (as storage.get_run)."""
        from mracq.storage import RunNotFoundError, _digit_uid_prefix

        text = ref.strip() if isinstance(ref, str) else None
        if text is not None and text.lstrip("-").isdigit():
            ref = int(text)
        rows = None
        if isinstance(ref, int):
            if ref < 0:
                n = len(self)
                if -ref > n:
                    raise RunNotFoundError(f"run {ref} does not exist: the catalog holds "
                                           f"{n} runs")
                rows = self._db.execute("SELECT id, metadata FROM nodes WHERE parent = 0 "
                                        "ORDER BY id DESC LIMIT 1 OFFSET ?",
                                        (-ref - 1,)).fetchall()
            elif ref == 0:
                raise RunNotFoundError("scan_id 0 does not exist (scan ids start at 1)")
            else:
                rows = self._rows("AND json_extract(metadata, '$.start.scan_id') = ?", (ref,),
                                  limit=1)
                if not rows:
                    if not _digit_uid_prefix(text):
                        raise RunNotFoundError(f"no run with scan_id {ref}")
                    ref = text  # no such scan_id: a uid prefix that is all digits
        if not rows:
            if not isinstance(ref, str) or not ref:
                raise RunNotFoundError(f"a run reference is a uid, a uid prefix or a "
                                       f"scan_id, not {ref!r}")
            if len(ref) < 5:
                raise RunNotFoundError(f"uid prefix {ref!r} is too short (at least 5 "
                                       "characters)")
            rows = self._db.execute(
                "SELECT id, metadata FROM nodes WHERE parent = 0 AND key LIKE ? "
                "ORDER BY id DESC LIMIT 2", (ref.replace("%", "").replace("_", "") + "%",)
            ).fetchall()
            if not rows:
                raise RunNotFoundError(f"no run with uid starting {ref!r}")
            if len(rows) > 1:
                raise RunNotFoundError(f"uid prefix {ref!r} matches more than one run; "
                                       "give more characters")
        node_id, md = rows[0]
        md = json.loads(md)
        streams = {key: (sid, json.loads(smd)) for sid, key, smd in self._db.execute(
            "SELECT id, key, metadata FROM nodes WHERE parent = ? ORDER BY id", (node_id,))}
        run = StoredRun(md, list(streams), lambda s: self._table(streams[s][0]))
        run._stream_md = {k: v[1] for k, v in streams.items()}
        return run

    # -- event data ------------------------------------------------------------------
    def _table(self, stream_id: int) -> dict:
        import numpy as np

        parts = self._db.execute(
            "SELECT n.key, n.structure_family, d.mimetype, d.parameters, a.data_uri "
            "FROM nodes n JOIN data_sources d ON d.node_id = n.id "
            "JOIN data_source_asset_association da ON da.data_source_id = d.id "
            "JOIN assets a ON a.id = da.asset_id WHERE n.parent = ? ORDER BY n.id",
            (stream_id,)).fetchall()
        out: dict = {}
        arrays = {}
        for key, family, mimetype, params, uri in parts:
            if family == "table" and mimetype == "application/x-tiled-sql-table":
                p = json.loads(params or "{}")
                if uri.startswith("sqlite:"):  # mracq.storage's tables (SQLite)
                    out.update(self._sqlite_table(uri, p["table_name"], p["dataset_id"]))
                else:
                    out.update(self._sql_table(p["table_name"], p["dataset_id"]))
            elif family == "array" and mimetype == "application/x-zarr":
                arrays[key] = self._zarr(uri)
            else:
                raise LayoutError(f"stored part {key!r} is {family} {mimetype}")
        n = len(out.get("seq_num", ()))
        for key, arr in arrays.items():
            out[key] = arr if not n else arr[:n]
        return {k: np.asarray(v) for k, v in out.items() if not k.startswith("ts_")}

    def _sql_table(self, table: str, dataset_id: int) -> dict:
        if not table.replace("_", "").isalnum():
            raise LayoutError(f"odd table name {table!r}")
        if self._duck is None:
            import duckdb

            from mracq.storage import StorageBusyError

            path = self.root / "storage.duckdb"
            try:
                self._duck = duckdb.connect(str(path), read_only=True)
            except duckdb.Error as exc:
                raise StorageBusyError(
                    f"the data folder {self.root} is in use by another process; run "
                    "`mracq runs`/`show` again when it has finished") from exc
        # the id inlined (an int): a bound parameter makes duckdb import pandas (~4 s)
        cur = self._duck.execute(f'SELECT * FROM "{table}" WHERE _dataset_id = '
                                 f"{int(dataset_id)} ORDER BY seq_num")
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        cols = {}
        for i, name in enumerate(names):
            if name.startswith("_"):
                continue
            cols[name] = [r[i] for r in rows]
        return cols

    def _sqlite_table(self, uri: str, table: str, dataset_id: int) -> dict:
        """Rows of one dataset of an SQLite table file, opened read only (a writer may
        hold it: SQLite lets readers in; a read-only folder: immutable)."""
        import os
        import sqlite3

        if not table.replace("_", "").isalnum():
            raise LayoutError(f"odd table name {table!r}")
        path = uri.split("://", 1)[1]
        path = "/" + (path[len("localhost"):] if path.startswith("localhost") else path).lstrip("/")
        ro = "" if os.access(os.path.dirname(path), os.W_OK) else "&immutable=1"
        with sqlite3.connect(f"file:{path}?mode=ro{ro}", uri=True) as con:
            cur = con.execute(f'SELECT * FROM "{table}" WHERE _dataset_id = '
                              f"{int(dataset_id)} ORDER BY seq_num")
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return {name: [r[i] for r in rows] for i, name in enumerate(names)
                if not name.startswith("_")}

    def _zarr(self, uri: str):
        import numpy as np
        import zarr

        prefix = "file://localhost"
        if not uri.startswith(prefix):
            raise LayoutError(f"array at {uri!r}")
        return np.asarray(zarr.open_array(uri[len(prefix):], mode="r")[...])

    def close(self) -> None:
        self._db.close()
        if self._duck is not None:
            self._duck.close()
            self._duck = None


class TiledStore:
    """The same interface over a Tiled client (a server URL, or the fallback)."""

    def __init__(self, client):
        self.client = client

    def __len__(self) -> int:
        return len(self.client)

    def list_runs(self, limit: int = 20) -> list[dict]:
        if limit <= 0:
            return []
        out = []
        for r in self.client.values()[-1:-int(limit) - 1:-1]:
            out.append(summarize_documents(r.metadata.get("start") or {}, r.metadata.get("stop")))
        return out

    def get_run(self, ref) -> StoredRun:
        from mracq.storage import get_run, run_table

        r = get_run(self.client, ref)
        streams = list(r)
        run = StoredRun(dict(r.metadata), streams, lambda s: run_table(r, s))
        run._stream_md = {s: dict(r[s].metadata) for s in streams}
        return run

    def close(self) -> None:
        from mracq.storage import close_catalog

        close_catalog(self.client)


def open_store(data_dir: str | Path | None = None, *, url: str | None = None,
               api_key: str | None = None):
    """Stored runs for reading: the fast reader for a data folder, Tiled for a URL.

    Raises
    ------
    FileNotFoundError
        ``data_dir`` holds no catalog (nothing is created).
    """
    from mracq.storage import default_data_dir, open_catalog

    if url:
        return TiledStore(open_catalog(None, url=url, api_key=api_key))
    root = Path(data_dir).expanduser().absolute() if data_dir else default_data_dir()
    try:
        return LocalStore(root)
    except LayoutError as exc:
        logger.info("reading %s through Tiled: %s", root, exc)
        return TiledStore(open_catalog(root, readonly=True))
