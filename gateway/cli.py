"""``relais`` command line: one sub-command per module in ``gateway.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (``args -> int`` exit code). Keeping commands in their own modules keeps this
file free of imports that only one command needs (start-up time matters for ``send``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

COMMANDS = (
    "serve",
    "send",
    "check",
    "exchanges",
    "show",
    "ins",
    "identities",
    "release",
    "replay",
    "simulate",
    "audit",
    "prune",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relais", description="Relais interoperability gateway")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"gateway.commands.{name}")
        except ModuleNotFoundError as exc:  # a command still being built
            if exc.name == f"gateway.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from gateway.logging import configure_logging

    configure_logging("warning")  # commands are quiet on stderr; `serve` re-configures
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
