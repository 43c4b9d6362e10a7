"""The ``mracq`` command.

Subcommands are discovered, so that each capability adds its own file and nobody edits a
shared list:

- ``mracq/cli/cmd_<name>.py`` becomes ``mracq <name>``;
- ``mracq/cli/analyze_<method>.py`` becomes ``mracq analyze <method>``;
- ``mracq/cli/train_<model>.py`` becomes ``mracq train <model>``;
- ``mracq/cli/scan_<method>.py`` becomes ``mracq scan <method>``.

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
    "scan": "measure and reconstruct (simulated instruments by default)",
    "train": "train a reconstruction model on simulated data",
}


class CLIError(Exception):
    """An error the user can fix; printed without a traceback."""


class Interrupted(Exception):
    """Ctrl-C, after a command stopped cleanly; the message says what was kept."""


#: library errors that mean "fix your input", printed like CLIError
USER_ERRORS = ("ConfigError", "RunNotFoundError", "StorageBusyError", "LimitError",
               "InterlockError", "VisaIOError", "PermissionError", "FileNotFoundError",
               "NotADirectoryError", "IsADirectoryError", "ConnectionError",
               "ConnectionRefusedError", "TimeoutError", "ReadOnlyDatabase", "OSError",
               "ValueError", "InvalidSession", "InstrumentError")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``mracq runs: error: ...; see mracq runs --help``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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
    parser = _Parser(
        prog="mracq",
        description="Instrument control and adaptive acquisition for nanoscale magnetic resonance.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules("cmd_"):
        mod = _load("cmd_", name)
        # cmd_qserver_profile.py -> `mracq qserver-profile`
        p = sub.add_parser(name.replace("_", "-"), help=mod.HELP, description=mod.HELP)
        _debug_flag(p)
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
            _debug_flag(p)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def _debug_flag(parser) -> None:
    # also after the command (`mracq runs --debug`); SUPPRESS keeps the top-level value
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")


def _one_line(exc: BaseException) -> str:
    """The error as one line (at most two), naming its kind when the text alone is unclear."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) or type(exc).__name__ in ("TimeoutError",):
        text = f"{text} ({type(exc).__name__})"
    return text if len(text) <= 400 else text[:397] + "..."


def _user_error(exc: BaseException) -> bool:
    for cls in type(exc).__mro__:
        if cls.__name__ in USER_ERRORS:
            return True
    return False


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
    debug = getattr(args, "debug", False)
    try:
        return int(args._run(args) or 0)
    except CLIError as exc:
        if debug:
            raise
        print(f"mracq: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mracq runs | head`: the reader left, nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Interrupted as exc:
        print(f"mracq: interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if debug:
            raise
        print("mracq: interrupted (stored runs and written files stay; `mracq runs` lists "
              "the runs)", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        if _user_error(exc):
            print(f"mracq: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(f"mracq: error: {type(exc).__name__}: {_one_line(exc)} "
              "(a bug? rerun with --debug for the traceback)", file=sys.stderr)
        return 1
