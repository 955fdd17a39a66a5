"""`nas latency …`: build, check, show and validate latency tables.

nas latency build    --space S --backend B --device D [--rounds 5] [--serial X] [--threads N] …
nas latency coverage --space S --backend B --device D
nas latency show     --backend B --device D
nas latency validate --space S --backend B --device D [--n 30] [--rounds 5]
nas latency adapt    --space S --backend B --device NEW --from DEVICE/BACKEND [--n 10] …
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("nas.latency")


def _common(p: argparse.ArgumentParser, space: bool = True) -> None:
    if space:
        p.add_argument("--space", required=True, help="experiment YAML or registered space name")
    p.add_argument("--backend", required=True, help="torch, onnxruntime, tflite, executorch or adb")
    p.add_argument("--device", required=True, help="table name of the device, e.g. pixel8")
    p.add_argument(
        "--tables", default=None, help="table root (default: the shipped latency_tables/data)"
    )


def _backend_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument(
        "--serial", default=None, help="adb: the phone's serial when several are connected"
    )
    p.add_argument("--taskset", default=None, help="adb: CPU mask to pin benchmark_model, e.g. f0")
    p.add_argument("--benchmark-binary", default=None, help="adb: local benchmark_model to push")
    p.add_argument("--torch-device", default=None, help="torch backend: cpu, cuda, mps")


def source(args: argparse.Namespace):
    """The table the command names and, from the backend options, how to measure into it."""
    from latency_tables.opening import BackendSettings, TableSource
    from latency_tables.table import DATA_ROOT

    options = {
        "adb": {
            "serial": getattr(args, "serial", None),
            "taskset": getattr(args, "taskset", None),
            "benchmark_binary": getattr(args, "benchmark_binary", None),
        },
        "torch": {"device": getattr(args, "torch_device", None)},
    }.get(args.backend, {})
    # `show` and `coverage` take no measurement options: BackendSettings' defaults then
    given = {k: getattr(args, k) for k in ("threads", "warmup", "runs") if hasattr(args, k)}
    backend = BackendSettings(args.backend, options=options, **given)
    return TableSource(backend, device=args.device, root=Path(args.tables or DATA_ROOT))


def cmd_build(args: argparse.Namespace) -> int:
    from latency_tables.build import build_table
    from nas.app.spaces import resolve_space

    entry = resolve_space(args.space)
    src = source(args)
    with src.backend.build() as backend:
        rep = build_table(
            entry,
            backend,
            src.root,
            src.device,
            batch=args.batch,
            retries=args.retries,
            retry_failed=args.retry_failed,
            force=args.force,
            statistic=args.statistic,
            rounds=args.rounds,
            timing=_timing(args),
        )
    sys.stdout.write(
        f"{rep.table}: {rep.needed} keys needed, {rep.already} already measured, "
        f"{rep.measured} measured now, {rep.failed} failed, {rep.seconds:.1f} s\n"
    )
    return 0 if rep.failed == 0 else 1


def _timing(args: argparse.Namespace):
    """A factory of the context timing runs in: pinned to `--core` at a raised priority,
    holding `--lock`."""
    import functools

    from latency_tables.quiet import timing_context

    return functools.partial(timing_context, args.lock or None, _core(args))


def _core(args: argparse.Namespace) -> int | None:
    """`--core`: a core index, or None for 'any' (no pinning)."""
    return None if args.core == "any" else int(args.core)


def cmd_coverage(args: argparse.Namespace) -> int:
    from latency_tables.opening import coverage
    from latency_tables.structure import SpaceStructure
    from nas.app.spaces import resolve_space

    entry = resolve_space(args.space)
    src = source(args)
    structure = SpaceStructure(entry.space())
    _, missing = coverage(structure, src)
    n = len(structure.block_keys())
    sys.stdout.write(f"{entry.name}: {n - len(missing)}/{n} keys in {src.csv_path}\n")
    for k in missing[: args.limit]:
        sys.stdout.write(f"  missing {k.id}\n")
    if missing:
        sys.stdout.write(f"measure them: {src.build_command(args.space)}\n")
    return 0 if not missing else 1


def cmd_show(args: argparse.Namespace) -> int:
    from latency_tables.table import LatencyTable

    src = source(args)
    table = LatencyTable.load(src.root, src.device, src.backend.name)
    sys.stdout.write(json.dumps(table.meta, indent=2) + "\n")
    df = table.to_frame()
    if len(df):
        ok = df[df.status == "ok"]
        stat = table.statistic
        summary = ok.groupby(["kind", "kernel"])[stat].agg(["count", "median", "min", "max"])
        sys.stdout.write(f"{stat} per kind and kernel:\n")
        sys.stdout.write(summary.to_string(float_format=lambda v: f"{v:.4g}") + "\n")
    failed = table.failed()
    sys.stdout.write(f"{len(table)} keys measured, {len(failed)} failed\n")
    for k, e in list(failed.items())[:10]:
        sys.stdout.write(f"  failed {k}: {e.error}\n")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from latency_tables.cost import CostModel
    from latency_tables.table import LatencyTable
    from latency_tables.validate import validate_table
    from nas.app.spaces import resolve_space

    entry = resolve_space(args.space)
    src = source(args)
    table = LatencyTable.load(src.root, src.device, src.backend.name)
    cost = CostModel(entry.space(), table)
    sets = {"n": args.n, "n_searched": args.searched, "seed": args.seed, "rounds": args.rounds}
    with src.backend.build() as backend:
        report = validate_table(
            entry,
            backend,
            cost,
            core=_core(args),
            lock=args.lock or None,
            stratified=not args.plain_random,
            **sets,
        )
    brief = {k: report[k] for k in ("space", "n", "raw", "calibrated_loo") if k in report}
    brief |= {k: report[k] for k in ("random", "searched") if k in report}
    brief["files"] = report.get("files", [])
    sys.stdout.write(json.dumps(brief, indent=2) + "\n")
    return 0


def _source_table(text: str, root: Path):
    from latency_tables.table import LatencyTable
    from nas.errors import ConfigError

    device, sep, backend = text.partition("/")
    if not sep or not device or not backend or "/" in backend:
        raise ConfigError(
            f"--from {text!r}: name a table as DEVICE/BACKEND, e.g. --from cpu-x86_64/onnxruntime"
        )
    return LatencyTable.load(root, device, backend)


def cmd_adapt(args: argparse.Namespace) -> int:
    from latency_tables.adapt import adapt
    from nas.app.spaces import resolve_space

    entry = resolve_space(args.space)
    src = source(args)
    tables = [_source_table(t, src.root) for t in args.sources]
    with src.backend.build() as backend:
        report = adapt(
            entry,
            backend,
            tables,
            src.root,
            src.device,
            n=args.n,
            seed=args.seed,
            rounds=args.rounds,
        )
    brief = {k: report[k] for k in ("table", "keys", "from", "space", "n", "validation")}
    brief["overhead_ms"] = report["model"]["overhead_ms"]
    brief["base_scale"] = report["model"]["base_scale"]
    sys.stdout.write(json.dumps(brief, indent=2) + "\n")
    return 0


def _end_to_end_opts(p: argparse.ArgumentParser, n: int, rounds: int) -> None:
    p.add_argument("--n", type=int, default=n, help="architectures to measure end to end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rounds",
        type=int,
        default=rounds,
        help="timing rounds over all architectures; each keeps its best round",
    )


def _quiet_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--core",
        default="-1",
        help="time pinned to this core (an index into the allowed cores; -1: the last) at a "
        "raised priority where permitted; 'any': no pinning",
    )
    p.add_argument(
        "--lock",
        default="/tmp/mqnas-timing.lock",
        help="a file flock-ed while timing (not while converting), which other timing jobs "
        "share; '' for none",
    )


def add_latency_parser(sub: argparse._SubParsersAction) -> None:
    from latency_tables.table import STATISTICS  # light: csv and json only

    lat = sub.add_parser("latency", help="build, check, show and validate latency tables")
    lsub = lat.add_subparsers(dest="latency_command", required=True)
    p = lsub.add_parser("build", help="measure every key a space needs that the table lacks")
    _common(p)
    _backend_opts(p)
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="retries of a failing key before it is recorded as failed",
    )
    p.add_argument(
        "--retry-failed", action="store_true", help="measure keys recorded as failed again"
    )
    p.add_argument(
        "--force", action="store_true", help="add to a table measured with other settings"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="timing rounds per key, interleaved over chunks of keys, each key keeping its "
        "best (on a shared host 5 makes keys steadier; the shipped table used 5)",
    )
    _quiet_opts(p)
    p.add_argument(
        "--statistic",
        choices=STATISTICS,
        default="min_ms",
        help="what a new table predicts with: the fastest run (default; steadiest on a shared "
        "host), the median or the mean of the timed runs; every one is stored",
    )
    p.set_defaults(func=cmd_build)
    p = lsub.add_parser("coverage", help="keys a space needs that the table lacks")
    _common(p)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_coverage)
    p = lsub.add_parser("show", help="a table's provenance and contents")
    _common(p, space=False)
    p.set_defaults(func=cmd_show)
    p = lsub.add_parser(
        "validate", help="compare the table with end-to-end runs; fit a calibration"
    )
    _common(p)
    _backend_opts(p)
    _end_to_end_opts(p, n=30, rounds=10)
    p.add_argument(
        "--searched",
        type=int,
        default=10,
        help="searched (deep, narrow) architectures measured beside the random ones; the "
        "calibration is fitted on the random ones only and checked on these",
    )
    p.add_argument(
        "--plain-random",
        action="store_true",
        help="draw the random architectures plainly, not stratified by predicted latency",
    )
    _quiet_opts(p)
    p.set_defaults(func=cmd_validate)
    p = lsub.add_parser(
        "adapt",
        help="a new device's table from N end-to-end runs there and other devices' tables",
    )
    _common(p)
    _backend_opts(p)
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="DEVICE/BACKEND",
        help="a source table under --tables (repeat for several, e.g. two phones' tables)",
    )
    _end_to_end_opts(p, n=10, rounds=3)
    p.set_defaults(func=cmd_adapt)
