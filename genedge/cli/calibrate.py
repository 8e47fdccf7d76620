"""``genedge calibrate``: fit a calibration table from profile runs."""

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
            "byte-identical table."
        ),
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="profile run directories")
    parser.add_argument("--out", required=True, metavar="TABLE.json", help="calibration table to write")
    parser.add_argument(
        "--figures",
        metavar="DIR",
        help="also draw score histograms, quality-vs-steps, latency and memory figures (PNG, SVG)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit, write and summarize the table; draw figures when asked."""
    from genedge.contract.files import check_not_input

    check_not_input({"--out": args.out, "--figures": args.figures}, {"RUN": args.runs})
    from genedge.calibrate import fit_and_write, table_summary  # pandas, pyarrow, scipy: after the cheap checks

    table, path, figures = fit_and_write(args.runs, args.out, args.figures)
    print(table_summary(table))
    print(f"\nwrote {path}")
    for figure in figures:
        print(f"wrote {figure}")
    return 0
