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
    from mracq.config import ConfigError, load_config
    from mracq.session import make_session

    try:
        config = load_config(args.config) if args.config else None
    except (ConfigError, OSError) as exc:
        raise CLIError(str(exc)) from exc
    try:
        return make_session(config, data_dir=args.data_dir, url=args.url,
                            api_key=args.api_key, **kwargs)
    except ConfigError as exc:
        raise CLIError(str(exc)) from exc


def open_catalog_from_args(args):
    """Only the catalog (no devices), read only: for commands that read stored runs (they
    work while a session holds the folder, and on a read-only copy)."""
    from mracq.cli import CLIError
    from mracq.storage import RunNotFoundError, default_data_dir, open_catalog

    data_dir = args.data_dir or (None if args.url else default_data_dir())
    try:
        return open_catalog(data_dir, url=args.url, api_key=args.api_key, readonly=True)
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
