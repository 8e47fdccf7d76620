"""``genedge demo``: the whole loop offline — profile two tiny replicas, calibrate, plan.

Everything runs on random-weight replicas of tiny architectures with a
random-weight CLIP, from prompts written into the demo folder, so it needs no
network and no GPU. The latency and memory it measures are real for this
machine; its CLIPScores are not image quality, and the output says so.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

__all__ = ["DEMO_MODELS", "DEMO_PROMPTS", "add_parser", "run"]

logger = logging.getLogger(__name__)

DEMO_MODELS = ("replica:tiny", "replica:tiny-xl")
DEMO_CLIP_BACKBONE = "replica:tiny"
DEMO_RESOLUTION = 64
DEMO_STEPS = (2, 3, 4)
#: genedge's own demo prompts, labelled by PartiPrompts Challenge so the default category
#: mapping applies (two of each of the paper's four categories).
DEMO_PROMPTS = (
    ("a red apple", "Basic"),
    ("a bicycle", "Basic"),
    ("a wooden chair with a blue cushion and carved legs", "Simple Detail"),
    ("a teapot with a chipped spout and a gold rim", "Fine-grained Detail"),
    ("a whale swimming through clouds above a city", "Imagination"),
    ("a library inside a hollow tree on the moon", "Imagination"),
    ("three cats on a sofa, one asleep, one eating, one looking out of a rainy window", "Complex"),
    ("a market stall selling lamps at dusk while a cyclist passes a street musician", "Complex"),
)
REPLICA_BANNER = ("NOTE: these are random-weight replicas. Their latency and memory are real measurements on this "
                  "machine; their CLIPScores are NOT image quality (random weights draw noise), so the plan shows "
                  "the mechanics of the loop, not which model is better.")


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
    parser.add_argument("--dir", type=Path,
                        help="folder for the run, table, figures and plan (default: a new temporary folder, kept)")
    parser.add_argument("--steps", type=lambda s: tuple(int(v) for v in s.split(",")), default=DEMO_STEPS,
                        help=f"denoising step counts to profile (default: {','.join(map(str, DEMO_STEPS))})")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--no-figures", action="store_true", help="skip the calibration figures")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Profile, calibrate and plan; print each stage's result and where its files are."""
    from genedge.calibrate import build_table, read_runs, save_table, table_summary, write_figures
    from genedge.cli._common import DEFAULT_MIX, DEFAULT_REQUESTS
    from genedge.optimizer import Problem, Workload, propose
    from genedge.optimizer.plan_file import plan_to_dict, save_plan
    from genedge.profiler import ProfileConfig, profile

    folder = args.dir or Path(tempfile.mkdtemp(prefix="genedge-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(REPLICA_BANNER)
    prompts = folder / "prompts.tsv"
    prompts.write_text("Prompt\tCategory\tChallenge\tNote\n"
                       + "".join(f"{text}\tgenedge demo\t{challenge}\t\n" for text, challenge in DEMO_PROMPTS),
                       encoding="utf-8")
    _single_thread_on_cpu(args.device)

    print(f"\n1. profile {', '.join(DEMO_MODELS)} at {list(args.steps)} steps on {len(DEMO_PROMPTS)} prompts")
    config = ProfileConfig(models=DEMO_MODELS, steps=tuple(args.steps), prompts=str(prompts), device=args.device,
                           resolution=DEMO_RESOLUTION, clip_backbone=DEMO_CLIP_BACKBONE, clip_pretrained=None)
    result = profile(config, folder / "run")
    print(f"   {result.recorded} images recorded ({result.failed} failed) in {result.run_dir}")

    print("\n2. calibrate")
    runs = read_runs([result.run_dir])
    table = build_table(runs)
    table_path = save_table(table, folder / "table.json")
    print(table_summary(table))
    print(f"   wrote {table_path}")
    if not args.no_figures:
        print(f"   wrote {len(write_figures(table, runs, folder / 'figures'))} figure files to {folder / 'figures'}")

    print("\n3. plan")
    workload = Workload.from_mix({c: DEFAULT_MIX.get(c, 1) for c in table.categories}, DEFAULT_REQUESTS)
    problem = Problem.from_table(table, workload)
    planned = propose(problem, rng=0)
    plan = planned.plan
    for category, row in plan.routing.items():
        print(f"   {category:<12} " + "  ".join(f"{m} {p:.2f}" for m, p in row.items()))
    print("   steps " + ", ".join(f"{m} {s}" for m, s in plan.steps.items())
          + "; GPU share " + ", ".join(f"{m} {r:.2f}" for m, r in plan.shares.items()))
    print(f"   predicted: CLIPScore {planned.mean_quality:.2f}, mean delay {planned.mean_delay_s:.3f} s, "
          f"p95 delay {planned.p95_delay_s:.3f} s, utility {planned.utility:.3f}")
    plan_path = save_plan(plan_to_dict(problem, planned, inputs={"table": str(table_path), "demo": True}),
                          folder / "plan.json")
    print(f"   wrote {plan_path}")
    print(f"\n{REPLICA_BANNER}\nfiles: {folder}")
    return 0


def _single_thread_on_cpu(device: str | None) -> None:
    """Run the tiny replicas single-threaded on a CPU.

    Their operations are so small that thread start-up dominates: on a 16-core CPU one thread
    profiles them about three times faster than the default pool.
    """
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu"):
        torch.set_num_threads(1)
