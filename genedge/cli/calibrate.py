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
    parser.add_argument("--figures", metavar="DIR",
                        help="also draw score histograms, quality-vs-steps, latency and memory figures (PNG, SVG)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit, write and summarize the table; draw figures when asked."""
    from genedge.calibrate import build_table, read_runs, save_table, table_summary

    runs = read_runs(args.runs)
    table = build_table(runs)
    path = save_table(table, args.out)
    print(table_summary(table))
    print(f"\nwrote {path}")
    if args.figures:
        from genedge.calibrate import write_figures

        for figure in write_figures(table, runs, args.figures):
            print(f"wrote {figure}")
    return 0
