"""``genedge calibrate``: fit a calibration table from profile runs, or update its latency lines from served records."""

from __future__ import annotations

import argparse
import logging

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge calibrate``."""
    parser = subparsers.add_parser(
        "calibrate",
        help="fit per-category CLIPScore Gaussians, latency lines and memory peaks from profile runs",
        description=(
            "Read profile runs (RUN/manifest.json + RUN/records/shard-*.parquet) of one device and one "
            "CLIPScore convention and write its calibration table. The same records always give a "
            "byte-identical table. With --served (and --table instead of RUN), update a table's latency "
            "lines from the server's records that 'genedge loadtest' stored instead."
        ),
    )
    parser.add_argument("runs", nargs="*", metavar="RUN", help="profile run directories")
    parser.add_argument("--out", required=True, metavar="TABLE.json", help="calibration table to write")
    parser.add_argument(
        "--figures",
        metavar="DIR",
        help="also draw score histograms, quality-vs-steps, latency and memory figures (PNG, SVG)",
    )
    parser.add_argument(
        "--served",
        action="append",
        metavar="LOADTEST_DIR",
        help="a 'genedge loadtest' result directory whose served records update --table's latency lines "
        "(repeat for several); quality cells are kept as they are",
    )
    parser.add_argument("--table", metavar="TABLE.json", help="the table to update from --served records")
    parser.set_defaults(func=run)


def _check_modes(args: argparse.Namespace) -> None:
    """Either profile runs, or --served with --table; a mixture is a usage error (exit 2)."""
    if args.served:
        if args.runs:
            raise ValueError("give profile runs (RUN ...) or --served load tests, not both")
        if args.table is None:
            raise ValueError("--served needs --table: the calibration table whose latency lines the records update")
        if args.figures is not None:
            raise ValueError("--figures draws a fit of profile runs; it does not apply to --served")
    else:
        if args.table is not None:
            raise ValueError("--table is the table --served records update; give --served LOADTEST_DIR too")
        if not args.runs:
            raise ValueError("expected profile run directories (RUN ...) or --served LOADTEST_DIR with --table")


def run(args: argparse.Namespace) -> int:
    """Fit, write and summarize the table; draw figures when asked. With --served, recalibrate --table."""
    from genedge.contract.files import check_not_input

    _check_modes(args)
    if args.served:
        check_not_input({"--out": args.out}, {"--table": [args.table], "--served": args.served})
        from genedge.calibrate import calibrate_served, served_summary  # pandas, pyarrow: after the cheap checks

        result, path = calibrate_served(args.served, args.table, args.out)
        print(served_summary(result))
        print(f"\nwrote {path}")
        return 0
    check_not_input({"--out": args.out, "--figures": args.figures}, {"RUN": args.runs})
    from genedge.calibrate import fit_and_write, table_summary  # pandas, pyarrow, scipy: after the cheap checks

    table, path, figures = fit_and_write(args.runs, args.out, args.figures)
    print(table_summary(table))
    print(f"\nwrote {path}")
    for figure in figures:
        print(f"wrote {figure}")
    return 0
