"""``genedge autoprofile``: profile until the plan is decided, measuring the cells that matter most.

A run folder holds one profile run per batch (``RUN/batches/NNNN``, each measured by the profiler
and resumable like any run), the settings (``RUN/autoprofile.json``), and one JSON line per decision
in ``RUN/decisions.jsonl``: the plan's confidence and expected regret, the value of every candidate
cell and the cell chosen, or why it stopped. This is the only layer that knows the profiler, the
calibration and the planner, so the loop lives here; the choice itself is
:func:`genedge.optimizer.adaptive.next_batch`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genedge.cli._common import (
    add_budget_arguments,
    add_workload_arguments,
    comma_separated,
    image_side,
    seed_argument,
    workload_from_args,
)

__all__ = ["add_parser", "run"]

SETTINGS_NAME = "autoprofile.json"
DECISIONS_NAME = "decisions.jsonl"
BATCHES_DIR = "batches"
# Written into a batch's folder once the profiler has measured all of it.
_DONE_NAME = "DONE"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from genedge.optimizer.adaptive import DEFAULT_TARGET
    from genedge.optimizer.uncertainty import DEFAULT_SAMPLES
    from genedge.profiler.clipscore import DEFAULT_CLIP_BACKBONE, DEFAULT_CLIP_PRETRAINED
    from genedge.profiler.prompts import DEFAULT_MAPPING

    parser = subparsers.add_parser(
        "autoprofile",
        help="profile until the plan is decided: measure the (model, category, steps) cells that matter most",
        description=(
            "Measure a first batch of images in every (model, category, steps) cell, then repeatedly fit the "
            "table, plan, and measure the cell whose images would most reduce the plan's expected regret (a "
            "parametric bootstrap of the table), until every routing, steps and deployment decision reaches "
            "--target confidence or --max-images are spent. Each batch is a resumable profile run under "
            "OUT/batches; rerunning the same command after a kill resumes without measuring anything twice. "
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
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance (default: 7.5)")
    parser.add_argument("--threads", type=int, help="CPU threads torch may use")
    parser.add_argument("--clip-backbone", default=DEFAULT_CLIP_BACKBONE, help=f"(default: {DEFAULT_CLIP_BACKBONE})")
    parser.add_argument(
        "--clip-pretrained", default=DEFAULT_CLIP_PRETRAINED, help=f"(default: {DEFAULT_CLIP_PRETRAINED}; 'none')"
    )
    parser.add_argument("--out", type=Path, required=True, help="the run folder")
    add_workload_arguments(parser, prompt_file=False)
    add_budget_arguments(parser)
    parser.set_defaults(func=run)


# Options a resumed run may change: they decide when to stop and what to plan for, not what was measured.
_MAY_CHANGE = frozenset(
    {
        "max_images",
        "target",
        "max_regret",
        "samples",
        "threads",
        "workload",
        "requests",
        "prompts",
        "budget",
        "weight",
        "verbose",
    }
)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options that decide what is measured: a resume must keep them."""
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in sorted(vars(args).items())
        if k not in _MAY_CHANGE and k not in ("func", "command", "out")
    }


def _check_settings(out: Path, settings: Mapping[str, Any]) -> None:
    """Write the run's settings, or refuse a resume with other ones (naming the first that differs)."""
    from genedge.contract.files import read_json, write_text_atomic

    path = out / SETTINGS_NAME
    if path.exists():
        existing = read_json(path, "autoprofile settings", ValueError)
        differ = [f"{k} = {existing.get(k)!r} (not {v!r})" for k, v in settings.items() if existing.get(k) != v]
        if differ:
            raise ValueError(
                f"{path}: this run was started with {', '.join(differ)}; resume it with the same settings or "
                "choose another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _write_prompts(path: Path, prompts: Sequence[Any]) -> None:
    """Write a batch's prompts as a PartiPrompts TSV (the profiler reads it with quoting disabled)."""
    from genedge.contract.files import write_text_atomic
    from genedge.profiler.prompts import P2_COLUMNS

    rows = [(p.text, p.p2_category or "", p.challenge or "", "") for p in prompts]
    for row in rows:
        if any(ch in value for value in row for ch in "\t\r\n"):
            raise ValueError(f"prompt {row[0]!r}: a tab or line break cannot be written to a TSV batch file")
    # Fields are written as they are: the reader takes a TSV exactly (no quoting), so a prompt that
    # holds a double quote keeps it.
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join("\t".join(row) + "\n" for row in [P2_COLUMNS, *rows]))


class _Run:
    """The batches of one autoprofile run: which prompts each cell has used, and measuring more."""

    def __init__(self, args: argparse.Namespace) -> None:
        import numpy as np

        from genedge.profiler.models import parse_model_spec
        from genedge.profiler.prompts import load_prompt_set

        self.args = args
        self.out: Path = args.out
        self.keys = {parse_model_spec(spec).key: spec for spec in args.model}
        prompts = load_prompt_set(args.prompt_source, mapping=args.category_mapping)
        gen = np.random.default_rng(args.seed)
        by_category: dict[str, list[Any]] = {}
        for p in prompts.prompts:
            by_category.setdefault(p.category, []).append(p)
        # One seeded order per category; every cell takes its next prompts from it.
        self.order = {c: [rows[i] for i in gen.permutation(len(rows))] for c, rows in sorted(by_category.items())}
        self.used: dict[tuple[str, str, int], int] = {}
        self.batches = sorted((self.out / BATCHES_DIR).glob("[0-9]" * 4)) if (self.out / BATCHES_DIR).exists() else []
        if self.batches and not (self.batches[-1] / "cells.json").exists():
            # Killed while creating it, before anything was measured: its prompts file is all there is.
            (self.batches[-1] / "prompts.tsv").unlink(missing_ok=True)
            self.batches.pop().rmdir()
        for folder in self.batches:
            cells = json.loads((folder / "cells.json").read_text())
            for key, category, steps, count in cells:
                self.used[(key, category, steps)] = self.used.get((key, category, steps), 0) + count

    def measure(self, key: str, steps: int, counts: Mapping[str, int]) -> Path:
        """Measure ``counts[category]`` more prompts of each category with one model at one step count."""
        from genedge.contract.files import write_text_atomic

        folder = self.out / BATCHES_DIR / f"{len(self.batches):04d}"
        prompts, cells = [], []
        for category, count in counts.items():
            start = self.used.get((key, category, steps), 0)
            chosen = self.order[category][start : start + count]
            if len(chosen) < count:
                raise ValueError(
                    f"category {category!r}: {len(self.order[category])} prompts in {self.args.prompt_source}, "
                    f"too few for {start + count} images of {key} at {steps} steps"
                )
            prompts.extend(chosen)
            cells.append([key, category, steps, count])
        _write_prompts(folder / "prompts.tsv", prompts)
        write_text_atomic(folder / "cells.json", json.dumps(cells) + "\n")
        self.batches.append(folder)
        for key_, category, steps_, count in cells:
            self.used[(key_, category, steps_)] = self.used.get((key_, category, steps_), 0) + count
        self.complete(folder)
        return folder

    def complete(self, folder: Path) -> None:
        """Measure whatever of a batch is not recorded yet (the profiler skips what is), then mark it done."""
        from genedge.profiler import ProfileConfig, profile

        if (folder / _DONE_NAME).exists():
            return
        (key, _, steps, _), *_ = json.loads((folder / "cells.json").read_text())
        a = self.args
        config = ProfileConfig(
            models=(self.keys[key],),
            steps=(steps,),
            prompts=str(folder / "prompts.tsv"),
            category_mapping=a.category_mapping,
            device=a.device,
            dtype=a.dtype,
            resolution=a.resolution,
            guidance_scale=a.guidance_scale,
            threads=a.threads,
            clip_backbone=a.clip_backbone,
            clip_pretrained=None if a.clip_pretrained.lower() == "none" else a.clip_pretrained,
        )
        profile(config, folder / "run")
        (folder / _DONE_NAME).write_text("")


def _append_decision(out: Path, line: Mapping[str, Any]) -> None:
    """Append one decision; a line a kill cut short is dropped first, so every line stays whole JSON."""
    path = out / DECISIONS_NAME
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            from genedge.contract.files import write_text_atomic

            write_text_atomic(path, text[: text.rfind("\n") + 1])
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def run(args: argparse.Namespace) -> int:
    from genedge.calibrate import calibrate_runs, save_table
    from genedge.contract.files import check_not_input
    from genedge.optimizer.adaptive import next_batch
    from genedge.optimizer.exact import exact_search
    from genedge.optimizer.problem import Problem
    from genedge.optimizer.uncertainty import Decision, parameter_model

    if not args.model:
        raise ValueError("--model: expected at least one model spec, but got none")
    if args.first_batch < 2:
        raise ValueError(
            f"--first-batch: expected at least 2 images per cell (a spread needs two), got {args.first_batch}"
        )
    check_not_input({"--out": args.out}, {"--prompts": args.prompt_source, "--category-mapping": args.category_mapping})
    _check_settings(args.out, _settings(args))
    state = _Run(args)
    for folder in state.batches:  # a batch a kill interrupted
        state.complete(folder)
    # The first batch: every cell, one profile run per (model, steps).
    for key in state.keys:
        for steps in args.steps:
            missing = {c: args.first_batch for c in state.order if (key, c, steps) not in state.used}
            if missing:
                state.measure(key, steps, missing)
    for iteration in itertools.count():
        with warnings.catch_warnings():
            if iteration:  # the fits' warnings were shown once; each refit would repeat them
                warnings.simplefilter("ignore")
            table = calibrate_runs([folder / "run" for folder in state.batches])
        workload = workload_from_args(args, table)
        problem = Problem.from_table(table, workload, budget=args.budget, weight=args.weight)
        plan = exact_search(problem)
        decision = next_batch(
            parameter_model(table, problem, workload),
            Decision.of(plan),
            batch=args.batch,
            budget=args.max_images,
            target=args.target,
            max_regret=args.max_regret,
            samples=args.samples,
            seed=args.seed,
        )
        _append_decision(args.out, {"batch": len(state.batches), **decision.to_dict()})
        print(
            f"{decision.images} images: confidence {decision.confidence:.3f}, expected regret "
            f"{decision.assessment.expected_regret:.3f}"
            + ("" if decision.choice is None else f"; next: {_cell(decision.choice)}")
        )
        if decision.stop is not None:
            print(f"stopped: {decision.stop}")
            print(f"wrote {save_table(table, args.out / 'table.json')}")
            return 0
        choice = decision.choice
        state.measure(choice.model, choice.steps, {choice.category: choice.images})


def _cell(value: Any) -> str:
    return f"{value.model} {value.category}@{value.steps} (+{value.images} images, regret -{value.reduction:.3f})"
