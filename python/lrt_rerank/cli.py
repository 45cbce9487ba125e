"""The ``lrt-rerank`` command line: each area registers its sub-commands from lrt_rerank.commands.

A command whose optional dependencies are missing fails here, in one line naming the extra that
installs them (:mod:`lrt_rerank.extras`), whether it was found missing while registering the command
or while running it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lrt_rerank import LrtError, __version__
from lrt_rerank.extras import MissingExtra, as_missing_extra

#: Modules under lrt_rerank.commands, each with ``register(subparsers)``.
COMMAND_MODULES = ("models", "pipeline", "tune", "plan", "serve", "opensearch", "stack", "train")


def _register_unavailable(sub: argparse._SubParsersAction, name: str, missing: MissingExtra) -> None:
    """A command whose module cannot be imported without an extra: listed, and naming the extra when run."""
    parser = sub.add_parser(name, help=f"(not installed: {missing})", add_help=False)
    parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def unavailable(args: argparse.Namespace) -> int:
        raise missing

    parser.set_defaults(func=unavailable)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrt-rerank", description="CPU re-ranking for hybrid search.")
    parser.add_argument("--version", action="version", version=f"lrt-rerank {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"lrt_rerank.commands.{name}")
            module.register(sub)
        except ImportError as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name == f"lrt_rerank.commands.{name}":
                continue
            missing = as_missing_extra(exc)
            if missing is None:
                raise
            _register_unavailable(sub, name, missing)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # third-party libraries (onnxruntime's quantizer among them) log chattily to the root logger
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lrt_rerank").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (LrtError, ValueError, FileNotFoundError) as exc:
        print(f"lrt-rerank {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        missing = as_missing_extra(exc)
        if missing is None:
            raise
        print(f"lrt-rerank {args.command}: {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
