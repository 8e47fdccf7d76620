"""Cells measured on the same prompts and seeds: their correlation, in the table file, and in the bootstrap."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_uncertainty import _base_table, _truth

from genedge.calibrate import PairedCells, TableError, calibrate_runs, save_table, table_from_dict, table_to_dict
from genedge.calibrate.cells import table_with_scores
from genedge.calibrate.pairing import MIN_SHARED_IMAGES, paired_cells
from genedge.contract.table_file import read_table_file
from genedge.optimizer.analysis._table_parameters import draw_parameters, parameter_model
from genedge.optimizer.model import Problem, Workload
from genedge.testing import QualityTruth, SyntheticModel, synthetic_run, write_run

CATEGORIES = ("Basic", "Detail")


def test_the_means_correlate_by_the_scores_correlation_times_the_shared_fraction() -> None:
    rng = np.random.default_rng(0)
    prompt = rng.normal(0, 3, 12)  # each prompt's difficulty, whichever model draws it
    a = {(p, 0): 30 + prompt[p] + rng.normal() for p in range(12)}
    b = {(p, 0): 31 + prompt[p] + rng.normal() for p in range(4, 12)}  # shares 8 of a's 12 images
    c = {(p, 1): 29 + rng.normal() for p in range(12)}  # another seed: shares no image with a or b
    (group,) = paired_cells({("m", "Basic", 10): a, ("n", "Basic", 10): b, ("m", "Basic", 20): c})
    shared = list(b)
    r = np.corrcoef([a[k] for k in shared], [b[k] for k in shared])[0, 1]
    assert group.category == "Basic" and group.cells == (("m", 10), ("n", 10))  # c pairs with none
    assert group.correlation[0][1] == pytest.approx(r * 8 / math.sqrt(12 * 8)) and r > 0.8
    few = {key: value for key, value in list(b.items())[: MIN_SHARED_IMAGES - 1]}
    assert paired_cells({("m", "Basic", 10): a, ("n", "Basic", 10): few}) == ()


def test_calibrating_profile_records_pairs_the_cells_that_share_prompts_and_seeds(tmp_path: Path) -> None:
    models = [
        SyntheticModel(
            key=key,
            quality={c: QualityTruth(a=30 + i, b=4.0, kappa=8.0, std=3.0) for i, c in enumerate(CATEGORIES)},
            overhead_s=0.3,
            per_step_s=0.05,
        )
        for key in ("small", "large")
    ]
    manifest, records = synthetic_run(models, steps=(10, 20, 30), prompts_per_category=12, rng=0)
    # Every prompt is equally hard or easy for both models, as real prompts are.
    difficulty = {p: 6.0 * np.sin(7.0 * i) for i, p in enumerate(sorted(records["prompt_id"].unique()))}
    records["clip_score"] = records["clip_score"] + records["prompt_id"].map(difficulty)
    run = write_run(tmp_path / "run", manifest, records)
    table = calibrate_runs([run])
    assert [g.category for g in table.paired] == list(CATEGORIES)
    basic = table.paired[0]
    assert set(basic.cells) == {(m, s) for m in ("small", "large") for s in (10, 20, 30)}
    pivot = records[records["category"] == "Basic"].pivot_table(
        index=["prompt_id", "seed"], columns=["model_key", "steps"], values="clip_score"
    )
    expected = pivot.corr()  # every image shared: the means correlate as the scores do
    for a, cell_a in enumerate(basic.cells):
        for b, cell_b in enumerate(basic.cells):
            assert basic.correlation[a][b] == pytest.approx(expected.loc[cell_a, cell_b], abs=1e-9)
    off_diagonal = np.array(basic.correlation)[~np.eye(len(basic.cells), dtype=bool)]
    assert off_diagonal.mean() > 0.4  # the prompts' difficulty (variance 18) against each image's noise (9)
    path = save_table(table, tmp_path / "table.json")
    again, raw = read_table_file(path)
    assert again.paired == table.paired and json.loads(raw)["paired_cells"][0]["category"] == "Basic"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda g: g.update(correlation=[[1.0, 0.5], [0.4, 1.0]]),
            "paired_cells[0].correlation[0][1]: expected symmetric",
        ),
        (lambda g: g.update(correlation=[[0.9, 0.5], [0.5, 1.0]]), "correlation[0][0]: expected 1 on the diagonal"),
        (lambda g: g.update(correlation=[[1.0]]), "paired_cells[0].correlation: expected a 2 x 2 matrix"),
        (lambda g: g.update(cells=[["fast", 10], ["fast", 15]]), "cells[1]: expected a quality cell of the table"),
        (lambda g: g.update(category="Complex"), "paired_cells[0].category: expected one entry per category"),
        (lambda g: g.update(correlation=[[1.0, 1.5], [1.5, 1.0]]), "expected a correlation in [-1, 1], but got 1.5"),
    ],
)
def test_a_malformed_pairing_is_named_by_its_json_path(edit, message: str) -> None:
    doc = table_to_dict(_base_table(_truth()))
    group = {"category": "Basic", "cells": [["fast", 10], ["slow", 10]], "correlation": [[1.0, 0.5], [0.5, 1.0]]}
    assert table_from_dict({**doc, "paired_cells": [group]}).paired[0].correlation[0][1] == 0.5
    edit(group)
    with pytest.raises(TableError, match=message.replace("[", r"\[").replace("]", r"\]")):
        table_from_dict({**doc, "paired_cells": [group]}, where="t.json")


def test_paired_cells_draw_their_errors_jointly_and_the_others_do_not_move() -> None:
    truth = _truth()
    cells = list(truth.mean)
    rng = np.random.default_rng(1)
    scores = {cell: truth.draw(cell, 20, rng) for cell in cells}
    # fast and slow drew the same 20 prompts of each category at 10 steps; the 20-step cells drew others.
    images = {
        cell: [(cell[1], i if cell[2] == 10 else 100 * (1 + cells.index(cell)) + i) for i in range(20)]
        for cell in cells
    }
    for category in CATEGORIES:
        shared = 2.0 * rng.normal(size=20)
        for key in ("fast", "slow"):
            scores[key, category, 10] = scores[key, category, 10] + shared
    unpaired = table_with_scores(_base_table(truth), scores)
    table = table_with_scores(_base_table(truth), scores, images)
    assert unpaired.paired == () and [g.cells for g in table.paired] == [(("fast", 10), ("slow", 10))] * 2
    problem = Problem.from_table(table, Workload.from_counts({"Basic": 12.0, "Detail": 8.0}))
    model = parameter_model(table, problem)
    draws = draw_parameters(model, 20_000, rng=3)
    index = {(p.model, p.category, p.steps): j for j, p in enumerate(model.parameters)}
    scale = np.array([p.std / math.sqrt(p.n) if p.kind == "cell" else p.se for p in model.parameters])
    z = draws.delta / (scale * draws.std_ratio)  # each cell's t draw over its own χ² spread: the joint Normal
    for group in table.paired:
        a, b = (index[key, group.category, steps] for key, steps in group.cells)
        # Within 4 standard errors of a correlation from 20,000 draws.
        assert np.corrcoef(z[:, a], z[:, b])[0, 1] == pytest.approx(group.correlation[0][1], abs=0.03)
    assert abs(np.corrcoef(z[:, index["fast", "Basic", 20]], z[:, index["slow", "Basic", 20]])[0, 1]) < 0.03
    plain = draw_parameters(parameter_model(unpaired, problem), 20_000, rng=3)
    alone = [index["fast", "Basic", 20], index["slow", "Detail", 20]]
    assert np.array_equal(plain.delta[:, alone], draws.delta[:, alone])


def test_refitting_some_cells_without_their_images_keeps_the_other_pairings() -> None:
    table = _base_table(_truth())
    group = PairedCells(
        "Basic", (("fast", 10), ("slow", 10), ("slow", 20)), ((1, 0.5, 0.4), (0.5, 1, 0.3), (0.4, 0.3, 1))
    )
    table = dataclasses.replace(table, paired=(group,))
    refit = table_with_scores(table, {("slow", "Basic", 20): np.array([30.0, 31.0, 29.5])})
    assert refit.paired == (PairedCells("Basic", (("fast", 10), ("slow", 10)), ((1, 0.5), (0.5, 1))),)
    assert table_with_scores(refit, {("slow", "Basic", 10): np.array([30.0, 31.0])}).paired == ()
