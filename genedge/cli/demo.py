"""``genedge demo``: the whole loop offline — profile two tiny replicas, calibrate, plan.

Everything runs on random-weight replicas of tiny architectures with a
random-weight CLIP, on genedge's own smoke prompts (two per paper category), so it
needs no network and no GPU. The latency and memory it measures are real for this
machine; its CLIPScores are not image quality, and the output says so.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import tempfile
from pathlib import Path

from genedge.cli._common import comma_separated, format_plan

__all__ = ["DEMO_MODELS", "add_parser", "run"]

logger = logging.getLogger(__name__)

DEMO_MODELS = ("replica:tiny", "replica:tiny-xl")
DEMO_CLIP_BACKBONE = "replica:tiny"
DEMO_RESOLUTION = 64
DEMO_STEPS = (2, 3, 4)
REPLICA_BANNER = (
    "NOTE: these are random-weight replicas. Their latency and memory are real measurements on this "
    "machine; their CLIPScores are NOT image quality (random weights draw noise), so the plan shows "
    "the mechanics of the loop, not which model is better."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole loop offline: profile two tiny replicas, calibrate, plan",
        description=(
            "Profile two tiny random-weight replicas on a few built-in prompts, fit their calibration table "
            "and plan a deployment from it, offline, in a fresh folder. The scores are not real quality."
        ),
    )
    parser.add_argument(
        "--dir", type=Path, help="folder for the run, table, figures and plan (default: a new temporary folder, kept)"
    )
    parser.add_argument(
        "--steps",
        type=comma_separated(int),
        default=DEMO_STEPS,
        help=f"denoising step counts to profile (default: {','.join(map(str, DEMO_STEPS))})",
    )
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--no-figures", action="store_true", help="skip the calibration figures")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Profile, calibrate and plan; print each stage's result and where its files are."""
    from genedge.calibrate import fit_and_write, table_summary
    from genedge.data import path as data_path
    from genedge.optimizer import Problem, run_methods
    from genedge.optimizer.model import workload_from_options
    from genedge.optimizer.plan_file import plan_to_dict, save_plan
    from genedge.profiler import ProfileConfig, profile

    folder = args.dir or Path(tempfile.mkdtemp(prefix="genedge-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    _single_thread_on_cpu(args.device)  # also stops a light install here, before any output
    print(REPLICA_BANNER)

    prompts = data_path("prompts", "smoke.tsv")
    print(f"\n1. profile {', '.join(DEMO_MODELS)} at {list(args.steps)} steps on the prompts of {prompts}")
    config = ProfileConfig(
        models=DEMO_MODELS,
        steps=tuple(args.steps),
        prompts=str(prompts),
        device=args.device,
        resolution=DEMO_RESOLUTION,
        clip_backbone=DEMO_CLIP_BACKBONE,
        clip_pretrained=None,
    )
    result = profile(config, folder / "run")
    print(f"   {result.recorded} images recorded ({result.failed} failed) in {result.run_dir}")

    print("\n2. calibrate")
    table, table_path, figures = fit_and_write(
        [result.run_dir], folder / "table.json", None if args.no_figures else folder / "figures"
    )
    print(table_summary(table))
    print(f"   wrote {table_path}")
    if figures:
        print(f"   wrote {len(figures)} figure files to {folder / 'figures'}")

    print("\n3. plan")
    problem = Problem.from_table(
        table,
        workload_from_options(table.categories),
        table_sha256=hashlib.sha256(table_path.read_bytes()).hexdigest(),
    )
    planned = run_methods(problem, ["genedge"], rng=0)["genedge"]
    print(format_plan(planned))
    print(
        f"   predicted: CLIPScore {planned.mean_quality:.2f}, mean delay {planned.mean_delay_s:.3f} s, "
        f"p95 delay {planned.p95_delay_s:.3f} s, utility {planned.utility:.3f}"
    )
    plan_path = save_plan(
        plan_to_dict(problem, planned, inputs={"table": str(table_path), "demo": True}), folder / "plan.json"
    )
    print(f"   wrote {plan_path}")
    print(f"\n{REPLICA_BANNER}\nfiles: {folder}")
    return 0


def _single_thread_on_cpu(device: str | None) -> None:
    """Run the tiny replicas single-threaded on a CPU.

    Their operations are so small that thread start-up dominates: on a 16-core CPU one thread
    profiles them about three times faster than the default pool.
    """
    from genedge.profiler._imports import require

    torch = require("torch")
    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu"):
        torch.set_num_threads(1)
