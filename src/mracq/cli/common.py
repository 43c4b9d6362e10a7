"""Options and helpers shared by the ``mracq`` subcommands."""

from __future__ import annotations

import os
from pathlib import Path


def add_session_arguments(parser) -> None:
    """--config, --data-dir, --url, --api-key."""
    g = parser.add_argument_group("session")
    g.add_argument("--config", metavar="TOML", help="lab configuration file "
                   "(default: $MRACQ_CONFIG, else the built-in all-simulated one)")
    g.add_argument("--data-dir", metavar="DIR", help="embedded catalog folder "
                   "(default: $MRACQ_DATA_DIR, else ~/.local/share/mracq)")
    g.add_argument("--url", metavar="URL", help="a Tiled server instead of the embedded store")
    g.add_argument("--api-key", metavar="KEY", help="Tiled API key (default: $TILED_API_KEY)")


def open_session(args, **kwargs):
    """A :class:`mracq.session.Session` from the common options (config errors -> CLIError)."""
    from mracq.cli import CLIError
    from mracq.config import ConfigError
    from mracq.session import make_session

    config = config_from_args(args)
    data_dir, url, key = storage_from_args(args)
    fresh = not data_dir.exists()
    try:
        return make_session(config, data_dir=data_dir, url=url, api_key=key, **kwargs)
    except BaseException as exc:
        if fresh:  # a failed start (an unreachable instrument...) leaves nothing behind
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
        if isinstance(exc, ConfigError):
            raise CLIError(str(exc)) from exc
        raise


def config_from_args(args):
    """The lab configuration ``--config`` names (else ``$MRACQ_CONFIG``, else the built-in).

    A missing or broken file is a :class:`CLIError`, whichever way it was named.
    """
    from mracq.cli import CLIError
    from mracq.config import ConfigError, load_config

    try:
        return load_config(getattr(args, "config", None) or None)
    except (ConfigError, OSError) as exc:
        raise CLIError(str(exc)) from exc


def storage_from_args(args):
    """``(data_dir, url, api_key)`` as every command resolves them.

    ``--data-dir``, else ``$MRACQ_DATA_DIR``, else ``storage.data_dir`` of the lab
    configuration (``--config`` or ``$MRACQ_CONFIG``), else the default folder; ``--url``
    else ``storage.url``; ``--api-key`` else ``storage.api_key``.
    """
    from mracq.storage import default_data_dir

    cfg = config_from_args(args)
    url = getattr(args, "url", None) or cfg.storage.get("url")
    key = getattr(args, "api_key", None) or cfg.storage.get("api_key")
    data_dir = getattr(args, "data_dir", None)
    data_dir = Path(data_dir).expanduser().absolute() if data_dir else default_data_dir(cfg)
    return data_dir, url, key


def open_store_from_args(args):
    """Stored runs for reading (no devices, nothing created): see :mod:`mracq.cli.store`."""
    from mracq.cli import CLIError
    from mracq.cli.store import open_store

    data_dir, url, key = storage_from_args(args)
    try:
        return open_store(data_dir, url=url, api_key=key)
    except FileNotFoundError:
        raise CLIError(f"no runs stored in {data_dir} (no catalog there); give the data "
                       "folder with --data-dir, or make runs first (`mracq demo`)") from None


def open_catalog_from_args(args):
    """Only the Tiled catalog (no devices), read only, honouring ``--config`` like every
    command (works while a session holds the folder, and on a read-only copy)."""
    from mracq.cli import CLIError
    from mracq.storage import RunNotFoundError, open_catalog

    data_dir, url, key = storage_from_args(args)
    try:
        return open_catalog(None if url else data_dir, url=url, api_key=key, readonly=True)
    except RunNotFoundError as exc:
        raise CLIError(str(exc)) from exc


def figure_dir(args, data_dir) -> Path:
    """Where figures go: --out, else ``<data_dir>/figures``."""
    out = Path(getattr(args, "out", None) or Path(data_dir or os.getcwd()) / "figures")
    out.mkdir(parents=True, exist_ok=True)
    return out


def human_time(seconds: float) -> str:
    """1234.5 -> '20 min 34.5 s'."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.3g} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{int(m)} min {s:.0f} s"
    h, m = divmod(m, 60)
    return f"{int(h)} h {int(m)} min"


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, also written as ``1e6`` or ``1_000_000``."""
    import argparse
    import math

    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 1")
    if value > 1e12:
        raise argparse.ArgumentTypeError(f"{text!r} is implausibly large (> 1e12)")
    return int(value)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def free_path(path, *, force: bool = False, what: str = "output"):
    """``path`` if nothing is there (or ``force``); else a :class:`CLIError` naming it."""
    from mracq.cli import CLIError

    path = Path(path)
    if path.exists() and not force:
        raise CLIError(f"{what} {path} exists; choose another name or pass --force to "
                       "overwrite it")
    return path


def run_interruptibly(session, plan, what: str, *, again: str):
    """``session.RE(plan)``; on Ctrl-C stop cleanly and say what was kept.

    The RunEngine pauses at the first Ctrl-C (bluesky's own message tells a shell user to
    call ``RE.resume()``, which a command-line user cannot); here the paused run is
    aborted instead, so its stop document is written and every event measured so far
    stays stored, and :class:`mracq.cli.Interrupted` says where and how to go on.
    """
    from bluesky.utils import RunEngineInterrupted

    from mracq.cli import Interrupted

    RE = session.RE
    try:
        return RE(plan)
    except (RunEngineInterrupted, KeyboardInterrupt):
        import logging

        if RE.state in ("paused", "pausing"):
            # bluesky logs the abort as an ERROR with a traceback: expected here, not shown
            quiet = logging.getLogger("bluesky")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            try:
                RE.abort(reason="stopped with Ctrl-C at the command line")
            except Exception as exc:  # noqa: BLE001 - report, the run is what matters
                logging.getLogger(__name__).warning("closing the run: %s", exc)
            finally:
                quiet.setLevel(level)
        scan_id = RE.md.get("scan_id")
        where = session.url or session.data_dir
        raise Interrupted(
            f"{what} stopped; what was measured is stored as scan {scan_id} (closed as "
            f"aborted) in {where}. See it with `mracq show {scan_id}`; to measure again run "
            f"{again}") from None
