"""The `nas` command.

nas spaces                 list the registered search spaces
nas space NAME [--json]    labels, options, size and the min / max architectures
nas search EXPERIMENT      the main job (see nas/app/cli_search.py); nas export, nas train
nas latency ...            latency tables (see nas/app/cli_latency.py)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from nas.app.cli_latency import add_latency_parser
from nas.app.cli_search import add_search_parsers
from nas.app.spaces import registry
from nas.errors import MqnasError
from nas.logs import setup_cli_logging

log = logging.getLogger("nas")


def cmd_spaces(args: argparse.Namespace) -> int:
    spaces = registry()
    for name in spaces.names():
        entry = spaces.get(name)
        space = entry.space()
        sys.stdout.write(
            f"{name:24s} {entry.family.name:12s} {len(space):5d} labels  size {float(space.size):.3g}\n"
        )
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    space = registry().get(args.name).space()
    if args.json:
        sys.stdout.write(
            json.dumps({lab: list(c.options) for lab, c in space.items()}, indent=2) + "\n"
        )
        return 0
    sys.stdout.write(f"{space!r}\n")
    for lab, c in space.items():
        sys.stdout.write(f"  {lab:56s} {list(c.options)}\n")
    sys.stdout.write(f"min: {space.freeze(space.min()).short()}\n")
    sys.stdout.write(f"max: {space.freeze(space.max()).short()}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="nas", description="mqnas: architecture and quantization search"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("spaces", help="list the registered search spaces")
    p.set_defaults(func=cmd_spaces)
    p = sub.add_parser("space", help="show one search space")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="labels and options as JSON")
    p.set_defaults(func=cmd_space)
    add_latency_parser(sub)
    add_search_parsers(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_cli_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except MqnasError as e:
        # A user error: one line that says what to fix, no traceback.
        sys.stderr.write(f"nas: error: {e}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
