"""``genedge autoprofile``: profile until the plan is decided, measuring the cells that matter most.

The run folder, its batches and its resume rules are :class:`genedge.profiler.autoprofile.AutoprofileRun`;
each decision line records the plan's confidence and expected regret, the value of every candidate cell
and the cell chosen, or why it stopped. This is the only layer that knows the profiler, the calibration
and the planner, so it composes them: measure, fit the table, plan, and ask
:func:`genedge.optimizer.analysis.next_batch` what to measure next.
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genedge.cli._common import (
    add_budget_arguments,
    add_workload_arguments,
    comma_separated,
    guidance_scale_argument,
    image_side,
    seed_argument,
    threads_argument,
    workload_from_args,
)
from genedge.contract.runs import DEFAULT_GUIDANCE_SCALE

if TYPE_CHECKING:
    from genedge.profiler.autoprofile import AutoprofileRun, AutoprofileSettings

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from genedge.optimizer.analysis import DEFAULT_SAMPLES, DEFAULT_TARGET, FREQUENCY_CHECKED_IMAGES
    from genedge.profiler.clipscore import DEFAULT_CLIP_BACKBONE, DEFAULT_CLIP_PRETRAINED
    from genedge.profiler.prompts import DEFAULT_MAPPING

    parser = subparsers.add_parser(
        "autoprofile",
        help="profile until the plan is decided: measure the (model, category, steps) cells that matter most",
        description=(
            "Measure a first batch of images in every (model, category, steps) cell, then repeatedly fit the "
            "table, plan, and measure the cell whose images would most reduce the plan's expected regret (a "
            "parametric bootstrap of the table), until every routing, steps and deployment decision reaches "
            "--target confidence with --min-images in every cell, or --max-images are spent. Each batch is a "
            "resumable profile run under OUT/batches; rerunning the same command after a kill resumes without "
            "measuring anything twice, and a second process on the same OUT is refused. "
            "OUT/decisions.jsonl records why each batch was chosen; OUT/table.json is the final table."
        ),
    )
    parser.add_argument("--model", action="append", default=[], metavar="SPEC", help="model spec, repeatable")
    parser.add_argument(
        "--steps", type=comma_separated(int), required=True, help="comma-separated step counts, e.g. 10,20,30"
    )
    parser.add_argument(
        "--prompts",
        dest="prompt_source",
        required=True,
        help="the prompts to profile: a local .tsv/.csv/.parquet file or a datasets hub id",
    )
    parser.add_argument("--category-mapping", default=DEFAULT_MAPPING, help=f"(default: {DEFAULT_MAPPING})")
    parser.add_argument("--first-batch", type=int, default=3, help="images per cell before choosing (default: 3)")
    parser.add_argument("--batch", type=int, default=4, help="images per chosen batch (default: 4)")
    parser.add_argument("--max-images", type=int, required=True, help="budget: the most images to measure in all")
    parser.add_argument(
        "--target",
        type=float,
        default=DEFAULT_TARGET,
        help=f"decision confidence to stop at (default: {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--min-images",
        type=int,
        default=FREQUENCY_CHECKED_IMAGES,
        help="the target counts once every cell has this many images: from there the plan's probabilities "
        f"were checked as frequencies, with fewer they ran high (default: {FREQUENCY_CHECKED_IMAGES})",
    )
    parser.add_argument(
        "--max-regret",
        type=float,
        help="also stop once the plan's expected regret is at most this many CLIPScore points (a near-tie "
        "that no affordable number of images decides costs little either way; default: no such stop)",
    )
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help=f"bootstrap samples (default: {DEFAULT_SAMPLES})"
    )
    parser.add_argument(
        "--seed", type=seed_argument, default=0, help="seed of the prompt order and the bootstrap (default: 0)"
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16")
    parser.add_argument(
        "--resolution", type=image_side, help="image side in pixels (default: each model's native size)"
    )
    parser.add_argument(
        "--guidance-scale",
        type=guidance_scale_argument,
        default=DEFAULT_GUIDANCE_SCALE,
        help=f"classifier-free guidance (default: {DEFAULT_GUIDANCE_SCALE})",
    )
    parser.add_argument("--threads", type=threads_argument, help="CPU threads torch may use")
    parser.add_argument("--clip-backbone", default=DEFAULT_CLIP_BACKBONE, help=f"(default: {DEFAULT_CLIP_BACKBONE})")
    parser.add_argument(
        "--clip-pretrained", default=DEFAULT_CLIP_PRETRAINED, help=f"(default: {DEFAULT_CLIP_PRETRAINED}; 'none')"
    )
    parser.add_argument("--out", type=Path, required=True, help="the run folder")
    add_workload_arguments(parser, prompt_file=False)
    add_budget_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genedge.contract.files import check_not_input
    from genedge.profiler.autoprofile import AutoprofileRun

    settings = _settings(args)
    check_not_input({"--out": args.out}, {"--prompts": args.prompt_source, "--category-mapping": args.category_mapping})
    with AutoprofileRun.open(args.out, settings, threads=args.threads) as state:
        state.resume()
        logged = state.logged_decision()
        if logged is not None and logged["choice"] is not None:
            # A kill came between logging this choice and measuring it: it stands, and is measured now.
            print(_summary(logged) + " (logged before the interruption)")
            _measure(state, logged["choice"])
        return _decide_until_stopped(args, state)


def _settings(args: argparse.Namespace) -> AutoprofileSettings:
    from genedge.profiler.autoprofile import AutoprofileSettings

    return AutoprofileSettings(
        model=tuple(args.model),
        steps=tuple(args.steps),
        prompt_source=args.prompt_source,
        category_mapping=args.category_mapping,
        first_batch=args.first_batch,
        batch=args.batch,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        resolution=args.resolution,
        guidance_scale=args.guidance_scale,
        clip_backbone=args.clip_backbone,
        clip_pretrained=args.clip_pretrained,
    )


def _decide_until_stopped(args: argparse.Namespace, state: AutoprofileRun) -> int:
    """Fit the table, plan, log the decision and measure its choice, until a decision stops."""
    from genedge.calibrate import calibrate_runs, save_table
    from genedge.optimizer.analysis import Decision, next_batch, parameter_model
    from genedge.optimizer.inputs import problem_from_options
    from genedge.optimizer.planners import exact_search

    for iteration in itertools.count():
        with warnings.catch_warnings():
            if iteration:  # the fits' warnings were shown once; each refit would repeat them
                warnings.simplefilter("ignore")
            table = calibrate_runs(state.run_dirs)
        workload = workload_from_args(args, table)
        problem = problem_from_options(table, workload, budget=args.budget, weight=args.weight)
        decision = next_batch(
            parameter_model(table, problem, workload),
            Decision.of(exact_search(problem)),
            batch=args.batch,
            budget=args.max_images,
            target=args.target,
            max_regret=args.max_regret,
            min_images=args.min_images,
            samples=args.samples,
            rng=args.seed,
        )
        line = decision.to_dict()
        state.append_decision(line)
        print(_summary(line))
        if decision.stop is not None:
            print(f"stopped: {decision.stop}")
            print(f"wrote {save_table(table, args.out / 'table.json')}")
            return 0
        _measure(state, line["choice"])


def _measure(state: AutoprofileRun, choice: dict[str, Any]) -> None:
    state.measure(choice["model"], choice["steps"], {choice["category"]: choice["images"]})


def _summary(line: dict[str, Any]) -> str:
    """One decision line of the log, as printed: images so far, confidence, expected regret, the choice."""
    choice = line["choice"]
    return (
        f"{line['images']} images: confidence {line['confidence']:.3f}, expected regret {line['expected_regret']:.3f}"
        + (
            ""
            if choice is None
            else f"; next: {choice['model']} {choice['category']}@{choice['steps']} "
            f"(+{choice['images']} images, regret -{choice['reduction']:.3f})"
        )
    )
