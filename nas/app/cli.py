"""The `nas` command.

nas spaces                 list the registered search spaces
nas space NAME [--json]    labels, options, size and the min / max architectures
nas search EXPERIMENT      the main job (see nas/app/cli_search.py); nas export, nas train
nas sample EXPORT_DIR      a labelled PNG grid of generated images (nas/app/samples.py)
nas latency ...            latency tables (see nas/app/cli_latency.py)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from nas.app.cli_latency import add_latency_parser
from nas.app.cli_search import add_search_parsers
from nas.app.samples import add_sample_parser
from nas.app.spaces import registry
from nas.errors import InternalError, MqnasError, UserError
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
    add_sample_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `nas` command; the exit status says whose move it is.

    0 done; 2 the input is wrong (`UserError`: one line saying what to change); 1 the run
    failed (another `MqnasError`: one line, plus the traceback for an `InternalError`, which
    is a bug to report). Any other exception propagates with its traceback.
    """
    try:
        args = build_parser().parse_args(argv)
        setup_cli_logging(args.verbose)
        try:
            code = int(args.func(args) or 0)
        except UserError as e:
            sys.stderr.write(f"nas: error: {e}\n")
            return 2
        except MqnasError as e:
            if isinstance(e, InternalError):  # a bug: the traceback is what to report
                traceback.print_exc()
            sys.stderr.write(f"nas: error: {e}\n")
            return 1
        # Flushed here, not at exit, so a closed pipe raises inside this try.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader (`nas spaces | head -1`) stopped reading: not an error of ours. Point
        # stdout at devnull so the flush at interpreter exit cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the pipe


if __name__ == "__main__":
    raise SystemExit(main())
