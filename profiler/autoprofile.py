"""An adaptive profiling run's folder: its batches of profile runs, its settings and its decision log, resumable.

A run folder holds one profile run per batch (``RUN/batches/NNNN/run``, each measured by
:func:`genedge.profiler.profile` and resumable like any run, beside the batch's ``prompts.tsv`` and
``cells.json``, and a ``DONE`` mark once all of it is measured), the settings that decide what is
measured (``RUN/autoprofile.json``), and one JSON line per decision (``RUN/decisions.jsonl``).

Resume rules: a run is resumed only with the same :class:`AutoprofileSettings` (the budget, target,
bootstrap samples, threads and what the plan is made for may change); a batch a kill cut short
before its cells were written is removed, one cut short while measuring is completed; a decision
line a kill cut short is dropped. Prompts are taken per category in one seeded order, so no prompt
is measured twice in a cell.

Which cell to measure next is :func:`genedge.optimizer.analysis.next_batch`'s decision; fitting the
table is the calibration's. ``genedge autoprofile`` composes the three around :class:`AutoprofileRun`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BATCHES_DIR",
    "DECISIONS_NAME",
    "SETTINGS_NAME",
    "AutoprofileRun",
    "AutoprofileSettings",
    "write_batch_prompts",
]

SETTINGS_NAME = "autoprofile.json"
DECISIONS_NAME = "decisions.jsonl"
BATCHES_DIR = "batches"
# Written into a batch's folder once the profiler has measured all of it.
_DONE_NAME = "DONE"
_CELLS_NAME = "cells.json"
_PROMPTS_NAME = "prompts.tsv"


@dataclass(frozen=True)
class AutoprofileSettings:
    """What an adaptive profiling run measures: a resume must keep all of it.

    Attributes:
        model: model specs (see :func:`genedge.profiler.parse_model_spec`), at least one.
        steps: step counts to profile.
        prompt_source: the prompts: a local .tsv/.csv/.parquet file or a datasets hub id.
        category_mapping: the category mapping's name or file.
        first_batch: images per cell before choosing (at least 2: a spread needs two).
        batch: images per chosen batch.
        seed: seed of the prompt order (and of the caller's bootstrap).
        device, dtype, resolution, guidance_scale: as :class:`genedge.profiler.ProfileConfig` takes them.
        clip_backbone: the CLIP backbone.
        clip_pretrained: its pretrained tag, or ``"none"`` for random weights.

    Raises:
        ValueError: no model, or a first batch under 2 images per cell.
    """

    model: tuple[str, ...]
    steps: tuple[int, ...]
    prompt_source: str
    category_mapping: str
    first_batch: int
    batch: int
    seed: int
    device: str | None
    dtype: str | None
    resolution: int | None
    guidance_scale: float
    clip_backbone: str
    clip_pretrained: str

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("--model: expected at least one model spec, but got none")
        if self.first_batch < 2:
            raise ValueError(
                f"--first-batch: expected at least 2 images per cell (a spread needs two), got {self.first_batch}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as written to ``autoprofile.json`` (sequences as lists, keys sorted)."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in sorted(vars(self).items())}


def write_batch_prompts(path: Path, prompts: Sequence[Any]) -> None:
    """Write a batch's prompts as a PartiPrompts TSV (the profiler reads it with quoting disabled).

    Raises:
        ValueError: a prompt holding a tab or line break (a TSV cannot hold it).
    """
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


class AutoprofileRun:
    """The batches of one adaptive profiling run: which prompts each cell has used, and measuring more.

    Open one with :meth:`open`; :meth:`resume` then completes an interrupted batch and measures the
    first batch of every cell still missing; :meth:`measure` adds a batch; :attr:`run_dirs` are the
    profile runs to calibrate from.

    Attributes:
        out: the run folder.
        settings: what it measures.
        threads: CPU threads torch may use (may change between resumes).
        keys: model key → spec.
        order: category → its prompts in the run's seeded order.
        used: (model key, category, steps) → images measured or being measured.
        batches: the batch folders, in order.
    """

    def __init__(self, out: Path, settings: AutoprofileSettings, threads: int | None = None) -> None:
        import numpy as np

        from genedge.profiler.models import parse_model_spec
        from genedge.profiler.prompts import load_prompt_set

        self.out = Path(out)
        self.settings = settings
        self.threads = threads
        self.keys = {parse_model_spec(spec).key: spec for spec in settings.model}
        prompts = load_prompt_set(settings.prompt_source, mapping=settings.category_mapping)
        gen = np.random.default_rng(settings.seed)
        by_category: dict[str, list[Any]] = {}
        for p in prompts.prompts:
            by_category.setdefault(p.category, []).append(p)
        # One seeded order per category; every cell takes its next prompts from it.
        self.order = {c: [rows[i] for i in gen.permutation(len(rows))] for c, rows in sorted(by_category.items())}
        self.used: dict[tuple[str, str, int], int] = {}
        self.batches = self._existing_batches()
        for folder in self.batches:
            self._count(json.loads((folder / _CELLS_NAME).read_text()))

    @classmethod
    def open(
        cls, out: str | os.PathLike[str], settings: AutoprofileSettings, threads: int | None = None
    ) -> AutoprofileRun:
        """Start a run in ``out``, or resume the one there (which must have the same settings).

        Raises:
            ValueError: ``out`` holds a run started with other settings (naming the first that differ).
        """
        _check_settings(Path(out), settings.to_dict())
        return cls(Path(out), settings, threads)

    def _existing_batches(self) -> list[Path]:
        root = self.out / BATCHES_DIR
        batches = sorted(root.glob("[0-9]" * 4)) if root.exists() else []
        if batches and not (batches[-1] / _CELLS_NAME).exists():
            # Killed while creating it, before anything was measured: its prompts file is all there is.
            (batches[-1] / _PROMPTS_NAME).unlink(missing_ok=True)
            batches.pop().rmdir()
        return batches

    def _count(self, cells: Sequence[Sequence[Any]]) -> None:
        for key, category, steps, count in cells:
            self.used[(key, category, steps)] = self.used.get((key, category, steps), 0) + count

    @property
    def run_dirs(self) -> list[Path]:
        """The profile run of every batch, in order."""
        return [folder / "run" for folder in self.batches]

    def resume(self) -> None:
        """Complete a batch a kill interrupted, then measure the first batch of every cell that lacks one
        (one profile run per (model, steps))."""
        for folder in self.batches:
            self.complete(folder)
        for key in self.keys:
            for steps in self.settings.steps:
                missing = {c: self.settings.first_batch for c in self.order if (key, c, steps) not in self.used}
                if missing:
                    self.measure(key, steps, missing)

    def measure(self, key: str, steps: int, counts: Mapping[str, int]) -> Path:
        """Measure ``counts[category]`` more prompts of each category with one model at one step count.

        Raises:
            ValueError: a category has too few prompts left.
        """
        from genedge.contract.files import write_text_atomic

        folder = self.out / BATCHES_DIR / f"{len(self.batches):04d}"
        prompts, cells = [], []
        for category, count in counts.items():
            start = self.used.get((key, category, steps), 0)
            chosen = self.order[category][start : start + count]
            if len(chosen) < count:
                raise ValueError(
                    f"category {category!r}: {len(self.order[category])} prompts in {self.settings.prompt_source}, "
                    f"too few for {start + count} images of {key} at {steps} steps"
                )
            prompts.extend(chosen)
            cells.append([key, category, steps, count])
        write_batch_prompts(folder / _PROMPTS_NAME, prompts)
        write_text_atomic(folder / _CELLS_NAME, json.dumps(cells) + "\n")
        self.batches.append(folder)
        self._count(cells)
        self.complete(folder)
        return folder

    def complete(self, folder: Path) -> None:
        """Measure whatever of a batch is not recorded yet (the profiler skips what is), then mark it done."""
        from genedge.profiler import ProfileConfig, profile

        if (folder / _DONE_NAME).exists():
            return
        (key, _, steps, _), *_ = json.loads((folder / _CELLS_NAME).read_text())
        s = self.settings
        config = ProfileConfig(
            models=(self.keys[key],),
            steps=(steps,),
            prompts=str(folder / _PROMPTS_NAME),
            category_mapping=s.category_mapping,
            device=s.device,
            dtype=s.dtype,
            resolution=s.resolution,
            guidance_scale=s.guidance_scale,
            threads=self.threads,
            clip_backbone=s.clip_backbone,
            clip_pretrained=None if s.clip_pretrained.lower() == "none" else s.clip_pretrained,
        )
        profile(config, folder / "run")
        (folder / _DONE_NAME).write_text("")

    def append_decision(self, line: Mapping[str, Any]) -> None:
        """Append one decision to ``decisions.jsonl``; a line a kill cut short is dropped first, so every line
        stays whole JSON."""
        path = self.out / DECISIONS_NAME
        if path.exists():
            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                from genedge.contract.files import write_text_atomic

                write_text_atomic(path, text[: text.rfind("\n") + 1])
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


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
