"""The ``lrt-rerank`` command line: each area registers its sub-commands from lrt_rerank.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lrt_rerank import LrtError, __version__

#: Modules under lrt_rerank.commands, each with ``register(subparsers)``.
COMMAND_MODULES = ("models", "pipeline", "serve", "opensearch", "stack", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrt-rerank", description="CPU re-ranking for hybrid search.")
    parser.add_argument("--version", action="version", version=f"lrt-rerank {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"lrt_rerank.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lrt_rerank.commands.{name}":
                raise
            continue
        module.register(sub)
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
