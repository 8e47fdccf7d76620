"""An adaptive profiling run's folder: its batches of profile runs, its settings and its decision log, resumable.

A run folder holds one profile run per batch (``RUN/batches/NNNN/run``, each measured by
:func:`genedge.profiler.profile` and resumable like any run, beside the batch's ``prompts.tsv`` and
``cells.json``, and a ``DONE`` mark once all of it is measured), the settings that decide what is
measured (``RUN/autoprofile.json``), and one JSON line per decision (``RUN/decisions.jsonl``).

One process writes a run folder at a time: it holds ``RUN/.lock`` (:mod:`genedge.contract.locks`)
from opening the folder to its last decision, and a second is refused at once. A batch appears whole:
its prompts and cells are written in ``batches/.NNNN.tmp`` and the folder renamed to ``batches/NNNN``.

Resume rules: a run is resumed only with the same :class:`AutoprofileSettings` (the budget, target,
bootstrap samples, threads and what the plan is made for may change); what a kill left half made is
removed first (a batch folder never renamed, the temporary files of atomic writes, a decision line
cut short), and a batch cut short while measuring is completed. The decision logged for the next
batch stands: a resume measures a logged choice rather than deciding again
(:meth:`AutoprofileRun.logged_decision`). Prompts are taken per category in one seeded order, so no
prompt is measured twice in a cell.

Which cell to measure next is :func:`genedge.optimizer.analysis.next_batch`'s decision; fitting the
table is the calibration's. ``genedge autoprofile`` composes the three around :class:`AutoprofileRun`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BATCHES_DIR",
    "DECISIONS_NAME",
    "LOCK_NAME",
    "SETTINGS_NAME",
    "AutoprofileRun",
    "AutoprofileSettings",
    "write_batch_prompts",
]

SETTINGS_NAME = "autoprofile.json"
DECISIONS_NAME = "decisions.jsonl"
BATCHES_DIR = "batches"
#: The run folder's lock file, held by the one process writing it.
LOCK_NAME = ".lock"
# A batch folder's name, and the name it is written under until it is whole.
_BATCH_NAME = re.compile(r"^[0-9]{4}$")
_UNFINISHED_BATCH = re.compile(r"^\.[0-9]{4}\.tmp$")
# Written into a batch's folder once the profiler has measured all of it.
_DONE_NAME = "DONE"
_CELLS_NAME = "cells.json"
_PROMPTS_NAME = "prompts.tsv"
# A logged choice's fields that name its batch, in the order of a cells.json entry.
_CELL_FIELDS = ("model", "category", "steps", "images")


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

    Open one with :meth:`open` (a context manager holding the folder's lock); :meth:`resume` then
    completes an interrupted batch and measures the first batch of every cell still missing;
    :meth:`measure` adds a batch; :attr:`run_dirs` are the profile runs to calibrate from;
    :meth:`append_decision` and :meth:`logged_decision` keep the decision log.

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
        self.batches = _existing_batches(self.out / BATCHES_DIR)
        for folder in self.batches:
            self._count(self._read_cells(folder))

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, out: str | os.PathLike[str], settings: AutoprofileSettings, threads: int | None = None
    ) -> Iterator[AutoprofileRun]:
        """Start a run in ``out``, or resume the one there (which must have the same settings), holding its lock.

        The folder is this process's until the ``with`` block ends; what a kill left half made there is
        removed before the run is read (see the module's resume rules).

        Raises:
            FolderBusyError: another process holds the folder's lock (naming the folder and the holder).
            ValueError: ``out`` holds a run started with other settings (naming the first that differ), or
                batches no kill leaves (naming the file and the field).
        """
        from genedge.contract.locks import hold_lock

        out = Path(out)
        busy = (
            f"{out}: another genedge autoprofile process ({{holder}}) is writing this run; "
            "wait for it to end, or use another --out"
        )
        with hold_lock(out / LOCK_NAME, busy):
            _check_settings(out, settings.to_dict())
            _remove_leftovers(out)
            yield cls(out, settings, threads)

    def _read_cells(self, folder: Path) -> list[list[Any]]:
        """A batch's cells: [model key, category, steps, images] of this run's models, categories and steps."""
        from genedge.contract.files import ArtifactError, read_json

        path = folder / _CELLS_NAME
        if not path.is_file():
            raise ArtifactError(str(path), "file", "missing; a batch folder appears with it, so it was removed since")
        cells = read_json(path, "a batch's cells")
        for number, cell in enumerate(cells if isinstance(cells, list) and cells else [cells]):
            if not (isinstance(cell, list) and len(cell) == 4 and self._is_cell(*cell)):
                raise ArtifactError(
                    str(path),
                    f"entry {number}",
                    f"expected [model key, category, steps, images] of this run, got {cell!r}",
                )
        return cells

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

        The batch folder is written under a temporary name and renamed whole, so a kill leaves either
        no batch or one that says what to measure.

        Raises:
            ValueError: a category has too few prompts left.
        """
        from genedge.contract.files import write_text_atomic

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
        folder = self.out / BATCHES_DIR / f"{len(self.batches):04d}"
        unfinished = folder.with_name(f".{folder.name}.tmp")
        write_batch_prompts(unfinished / _PROMPTS_NAME, prompts)
        write_text_atomic(unfinished / _CELLS_NAME, json.dumps(cells) + "\n")
        os.rename(unfinished, folder)
        self.batches.append(folder)
        self._count(cells)
        self.complete(folder)
        return folder

    def complete(self, folder: Path) -> None:
        """Measure whatever of a batch is not recorded yet (the profiler skips what is), then mark it done."""
        from genedge.contract.files import write_text_atomic
        from genedge.profiler import ProfileConfig, profile

        if (folder / _DONE_NAME).exists():
            return
        (key, _, steps, _), *_ = self._read_cells(folder)
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
        write_text_atomic(folder / _DONE_NAME, "")

    def logged_decision(self) -> dict[str, Any] | None:
        """The decision already logged for the next batch (a resume follows it), or None when it is yet to be made.

        A decision line names the batch it decides (the number of batches when it was made): a kill between
        logging a choice and creating its batch leaves the choice logged, and the resume measures it.

        Raises:
            ArtifactError: a line that is not a JSON object, one whose ``batch`` is not a batch number of this
                folder, or a last line for the next batch that holds neither a stop nor a cell of this run
                (naming the file, the line and the field).
        """
        from genedge.contract.files import ArtifactError

        path = self.out / DECISIONS_NAME
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        last = None
        for number, text in enumerate(lines, 1):
            try:
                last = json.loads(text)
            except json.JSONDecodeError as err:
                raise ArtifactError(str(path), f"line {number}", f"not valid JSON ({err.msg})") from err
            batch = last.get("batch") if isinstance(last, dict) else None
            if type(batch) is not int or not 0 <= batch <= len(self.batches):
                raise ArtifactError(
                    str(path), f"line {number}: field 'batch'", f"expected 0 to {len(self.batches)}, got {batch!r}"
                )
        if last is None or last["batch"] != len(self.batches):
            return None
        stop, choice = last.get("stop"), last.get("choice")
        is_choice = isinstance(choice, dict) and self._is_cell(*(choice.get(f) for f in _CELL_FIELDS))
        if not ((isinstance(stop, str) and choice is None) or (stop is None and is_choice)):
            raise ArtifactError(
                str(path),
                f"line {len(lines)}: fields 'stop', 'choice'",
                f"expected a stop or a cell of this run to measure, got {stop!r}, {choice!r}",
            )
        return last

    def _is_cell(self, key: Any, category: Any, steps: Any, images: Any) -> bool:
        """Whether a model key, category and step count are this run's, and images a positive count."""
        return (
            isinstance(key, str)
            and key in self.keys
            and isinstance(category, str)
            and category in self.order
            and type(steps) is int
            and steps in self.settings.steps
            and type(images) is int
            and images > 0
        )

    def append_decision(self, decision: Mapping[str, Any]) -> bool:
        """Log ``decision`` (:meth:`genedge.optimizer.analysis.BatchDecision.to_dict`) for the next batch.

        One line per decision: a stop already logged for the next batch is not logged again (a resume
        with other options that decides otherwise, e.g. a larger budget that goes on, is logged after it).

        Returns:
            Whether a line was appended.

        Raises:
            ValueError: a choice is logged for the next batch already (measure it instead of deciding again).
        """
        line = {"batch": len(self.batches), **decision}
        logged = self.logged_decision()
        if logged is not None and logged["choice"] is not None:
            raise ValueError(
                f"{self.out / DECISIONS_NAME}: batch {line['batch']}'s choice is logged already; measure it first"
            )
        if logged is not None and logged["stop"] == line["stop"]:
            return False
        with (self.out / DECISIONS_NAME).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return True


def _existing_batches(root: Path) -> list[Path]:
    """The batch folders, numbered from 0000 without a gap."""
    batches = sorted(path for path in root.iterdir() if _BATCH_NAME.match(path.name)) if root.is_dir() else []
    for number, folder in enumerate(batches):
        if folder.name != f"{number:04d}":
            raise ValueError(f"{root}: expected batches numbered from 0000 without a gap, but {number:04d} is missing")
    return batches


def _remove_leftovers(out: Path) -> None:
    """Remove what a kill left half made in a run folder: batch folders never renamed into place, the temporary
    files of atomic writes (its own and its profile runs'), and a decision line cut short. Only under the lock."""
    from genedge.contract.files import remove_temporaries

    root = out / BATCHES_DIR
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if _UNFINISHED_BATCH.match(folder.name) and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
    remove_temporaries(out, recursive=True)
    decisions = out / DECISIONS_NAME
    if decisions.is_file():
        data = decisions.read_bytes()
        if data and not data.endswith(b"\n"):
            os.truncate(decisions, data.rfind(b"\n") + 1)


def _check_settings(out: Path, settings: Mapping[str, Any]) -> None:
    """Write the run's settings, or refuse a resume with other ones (naming the first that differs)."""
    from genedge.contract.files import ArtifactError, read_json, write_text_atomic

    path = out / SETTINGS_NAME
    if path.exists():
        existing = read_json(path, "autoprofile settings (a JSON object)")
        if not isinstance(existing, dict):
            raise ArtifactError(str(path), "document", f"expected a JSON object, but got {type(existing).__name__}")
        differ = [f"{k} = {existing.get(k)!r} (not {v!r})" for k, v in settings.items() if existing.get(k) != v]
        if differ:
            raise ValueError(
                f"{path}: this run was started with {', '.join(differ)}; resume it with the same settings or "
                "choose another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
