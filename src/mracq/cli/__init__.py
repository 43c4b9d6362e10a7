"""The ``mracq`` command.

Subcommands are discovered, so that each capability adds its own file and nobody edits a
shared list:

- ``mracq/cli/cmd_<name>.py`` becomes ``mracq <name>``;
- ``mracq/cli/analyze_<method>.py`` becomes ``mracq analyze <method>``;
- ``mracq/cli/train_<model>.py`` becomes ``mracq train <model>``.

Each such module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code). Keep heavy imports inside ``run`` so that
``mracq --help`` and every other command start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

GROUPS = {
    "analyze": "analyze data offline (CSV, .npy or a stored run)",
    "train": "train a reconstruction model on simulated data",
}


class CLIError(Exception):
    """An error the user can fix; printed without a traceback."""


#: library errors that mean "fix your input", printed like CLIError
USER_ERRORS = ("ConfigError", "RunNotFoundError", "StorageBusyError", "LimitError")


def _modules(prefix: str) -> list[str]:
    import mracq.cli as pkg

    return sorted(
        m.name[len(prefix) :]
        for m in pkgutil.iter_modules(pkg.__path__)
        if m.name.startswith(prefix)
    )


def _load(prefix: str, name: str):
    return importlib.import_module(f"mracq.cli.{prefix}{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mracq",
        description="Instrument control and adaptive acquisition for nanoscale magnetic resonance.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules("cmd_"):
        mod = _load("cmd_", name)
        # cmd_qserver_profile.py -> `mracq qserver-profile`
        p = sub.add_parser(name.replace("_", "-"), help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    for group, help_text in GROUPS.items():
        names = _modules(f"{group}_")
        if not names:
            continue
        gp = sub.add_parser(group, help=help_text, description=help_text)
        gsub = gp.add_subparsers(dest="method", metavar="METHOD", required=True)
        for name in names:
            mod = _load(f"{group}_", name)
            p = gsub.add_parser(name, help=mod.HELP, description=mod.HELP)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.verbose < 2:
        logging.getLogger("tiled").setLevel(logging.WARNING)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except CLIError as exc:
        print(f"mracq: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ not in USER_ERRORS:
            raise
        print(f"mracq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mracq: interrupted", file=sys.stderr)
        return 130
