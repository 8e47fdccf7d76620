"""What ``genedge plan`` and ``genedge autoprofile`` decide, called as a notebook user calls it: no argparse.

- the router choice ('auto', 'none', a shipped name, a file) and counting a prompt file with it;
- a router's training rows, its routed rows written as a file, its cross-validation document;
- the workload and the problem from plain options, the SLO, the bootstrap's default size;
- the inputs a plan document records;
- an adaptive profiling run's folder: its settings, a torn batch and a torn decision line on resume.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from genedge.calibrate import load_table
from genedge.contract.mappings import load_category_mapping
from genedge.contract.prompts import read_prompt_file
from genedge.data import resolve_router, resolve_table
from genedge.optimizer.analysis import DEFAULT_SAMPLES
from genedge.optimizer.inputs import BootstrapSize, bootstrap_size, problem_from_options, slo_from_options
from genedge.optimizer.model import DEFAULT_MIX, Workload, default_mix, workload_from_options
from genedge.optimizer.plan_file import plan_inputs, plan_to_dict, validate_plan
from genedge.router import choose_router, count_routed, router_path

REFERENCE = resolve_table("reference-a100")
CATEGORIES = ("Basic", "Detail", "Imagination", "Complex")


@pytest.fixture(scope="module")
def table():
    return load_table(REFERENCE)


def _prompt_file(path: Path) -> Path:
    rows = "A red apple on a table\tBasic\nA dog in a park\t\nThe city at night in fog\t\n"
    path.write_text("Prompt\tChallenge\n" + rows, encoding="utf-8")
    return path


# --- router choice --------------------------------------------------------------------------------


def test_the_router_choice_names_a_file_or_none() -> None:
    paper4 = load_category_mapping("paper4")
    assert router_path("none", paper4) is None
    assert router_path("auto", paper4) == resolve_router("paper4-tfidf")
    assert router_path("paper4-minilm", paper4) == resolve_router("paper4-minilm")
    # No shipped router routes into the eleven challenges: 'auto' finds none.
    assert router_path("auto", load_category_mapping("challenge")) is None


def test_a_router_for_another_mapping_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"router 'paper4-tfidf' routes into the categories .* 'challenge'"):
        choose_router("paper4-tfidf", load_category_mapping("challenge"))
    with pytest.raises(ValueError, match="no-such-router"):
        choose_router("no-such-router", load_category_mapping("paper4"))


def test_prompts_are_counted_by_label_and_routed_by_the_chosen_router(tmp_path: Path) -> None:
    prompts = read_prompt_file(_prompt_file(tmp_path / "prompts.tsv"))
    mapping = load_category_mapping("paper4")
    routed = count_routed(prompts, mapping)  # 'auto': the shipped TF-IDF router
    assert routed.router == choose_router("auto", mapping).name
    assert routed.labelled["Basic"] == 1 and sum(routed.routed.values()) == 2 and routed.not_placed == 0
    unrouted = count_routed(prompts, mapping, "none")
    assert unrouted.router is None and unrouted.not_placed == 2 and unrouted.counts == {"Basic": 1}
    with pytest.raises(ValueError, match="no shipped router fits it"):
        count_routed(prompts, load_category_mapping("challenge"))


def test_a_router_trains_on_the_labelled_rows_and_writes_what_it_routes(tmp_path: Path) -> None:
    import pandas as pd

    from genedge.contract.files import ArtifactError
    from genedge.router import evaluation_document, training_data, write_evaluation, write_routed

    path = _prompt_file(tmp_path / "prompts.tsv")
    data = training_data(path, "paper4")
    assert (data.prompts, data.categories) == (["A red apple on a table"], ["Basic"])
    assert data.source["file"] == "prompts.tsv" and data.source["rows"] == 3 and len(data.source["sha256"]) == 64
    unlabelled = tmp_path / "unlabelled.tsv"
    unlabelled.write_text("Prompt\tChallenge\nA dog in a park\t\n", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"unlabelled.tsv: Challenge: expected rows labelled \['Basic'"):
        training_data(unlabelled, "paper4")

    router = choose_router("paper4-tfidf", data.mapping)
    table = read_prompt_file(path)
    proba = router.predict_proba(table.column("Prompt"))
    written = write_routed(table, router.categories, proba, tmp_path / "routed.csv")
    frame = pd.read_csv(written)
    assert list(frame.columns[:4]) == ["Prompt", "Challenge", "category", "probability"]
    assert list(frame["category"]) == [router.categories[i] for i in proba.argmax(axis=1)]
    assert frame[[f"p_{c}" for c in router.categories]].sum(axis=1).round(9).eq(1).all()
    with pytest.raises(ValueError, match=r"--out: expected a \.parquet, \.csv, \.tsv file"):
        write_routed(table, router.categories, proba, tmp_path / "routed.xlsx")

    document = evaluation_document(data.mapping, 1, 5, 0, {"tfidf": router.cross_validation})
    assert json.loads(write_evaluation(document, tmp_path / "eval.json").read_text())["reports"]["tfidf"] == (
        router.cross_validation.to_dict()
    )


# --- workload and problem -------------------------------------------------------------------------


def test_the_default_workload_is_partiprompts_mix_of_the_tables_categories() -> None:
    assert default_mix([*CATEGORIES, "Other"]) == {**DEFAULT_MIX, "Other": 1}
    workload = workload_from_options(CATEGORIES)
    assert workload == Workload.from_mix(DEFAULT_MIX, 100)
    assert dict(workload.counts) == {"Basic": 25, "Detail": 50, "Imagination": 14, "Complex": 11}


def test_a_total_rate_is_split_in_the_prompt_files_mix_and_keeps_its_composition() -> None:
    composition = {"Basic": {"Basic": 1.0}, "Detail": {"Basic": 0.25, "Detail": 0.75}}
    counted = Workload(counts={"Basic": 1, "Detail": 3}, composition=composition)
    rates = workload_from_options(CATEGORIES, prompts=counted, rate=2.0)
    assert rates.per_second and dict(rates.counts) == {"Basic": 0.5, "Detail": 1.5}
    assert rates.composition == counted.composition


def test_counts_become_rates_only_with_open_arrivals_and_a_window() -> None:
    counts = {"Basic": 10, "Detail": 20}
    assert workload_from_options(CATEGORIES, counts=counts) == Workload.from_counts(counts)
    opened = workload_from_options(CATEGORIES, counts=counts, arrivals="open", window_s=100)
    assert opened.per_second and dict(opened.counts) == {"Basic": 0.1, "Detail": 0.2}
    with pytest.raises(ValueError, match="--arrivals open needs rates"):
        workload_from_options(CATEGORIES, counts=counts, arrivals="open")
    with pytest.raises(ValueError, match="plan them with --arrivals open"):
        workload_from_options(CATEGORIES, rates={"Basic": 0.1}, arrivals="window")
    with pytest.raises(ValueError, match="--rate: expected requests per second > 0"):
        workload_from_options(CATEGORIES, rate=0.0)


def test_an_slo_holds_p95_unless_told_otherwise() -> None:
    assert slo_from_options(None) is None
    slo = slo_from_options(20)
    assert (slo.seconds, slo.attainment, slo.scope) == (20, 0.95, "overall")
    assert slo_from_options(20, percentile=90, scope="category").describe() == "p90 <= 20 s (category)"
    assert slo_from_options(20, attainment=0.8).attainment == 0.8
    with pytest.raises(ValueError, match="need --slo"):
        slo_from_options(None, percentile=90)
    with pytest.raises(ValueError, match=r"--percentile: expected a percentile in \(0, 100\)"):
        slo_from_options(20, percentile=100)


def test_the_problem_takes_its_delay_model_from_the_workload_and_quality_drops_the_weight(table) -> None:
    rates = workload_from_options(table.categories, rate=0.1)
    opened = problem_from_options(table, rates, slo=slo_from_options(60), objective="quality", memory_gib=14)
    assert opened.arrivals == "open" and opened.weight == 0.0
    assert opened.device_memory_bytes == 14 * 2**30
    window = problem_from_options(table, workload_from_options(table.categories), weight=0.1)
    assert window.arrivals == "window" and window.weight == 0.1 and window.slo is None
    with pytest.raises(ValueError, match="--objective quality maximizes CLIPScore subject to an SLO"):
        problem_from_options(table, rates, objective="quality")


def test_one_demand_is_planned_per_window_and_as_the_same_rate(table) -> None:
    from genedge.optimizer.inputs import window_and_open_problems

    counts = workload_from_options(table.categories)  # 100 requests
    window, opened = window_and_open_problems(table, counts, 600.0, budget=0.5)
    assert (window.arrivals, opened.arrivals) == ("window", "open") and opened.budget == window.budget == 0.5
    assert window.n_requests == 100 and opened.n_requests == pytest.approx(100 / 600)
    # A trace's rates: categories at rate 0 drop out, and the window holds rate x T requests.
    rates = Workload.from_rates({"Basic": 0.05, "Detail": 0.1, "Imagination": 0.0, "Complex": 0.05})
    window, opened = window_and_open_problems(table, rates, 100.0)
    assert window.categories == opened.categories == ("Basic", "Detail", "Complex")
    assert window.counts.tolist() == [5, 10, 5] and opened.n_requests == pytest.approx(0.2)
    with pytest.raises(ValueError, match="Expected a window length > 0 seconds"):
        window_and_open_problems(table, counts, 0.0)


def test_the_bootstrap_runs_by_default_only_where_each_sample_is_fast(table) -> None:
    window = problem_from_options(table, workload_from_options(table.categories))
    assert bootstrap_size(window) == BootstrapSize(DEFAULT_SAMPLES)
    opened = problem_from_options(table, workload_from_options(table.categories, rate=0.1))
    assert bootstrap_size(opened) == BootstrapSize(0, "open arrivals")
    assert bootstrap_size(opened, robust=True).samples == DEFAULT_SAMPLES
    assert bootstrap_size(opened, 50) == BootstrapSize(50)
    for samples, robust in ((1, False), (-3, False), (0, True)):
        with pytest.raises(ValueError, match=r"--samples: expected 0 \(skip\) or at least 2"):
            bootstrap_size(window, samples, robust=robust)


# --- the plan document ----------------------------------------------------------------------------


def test_a_plan_records_its_table_and_prompt_file(table, tmp_path: Path) -> None:
    from genedge.optimizer import run_methods

    prompts = count_routed(read_prompt_file(_prompt_file(tmp_path / "p.tsv")), table.category_mapping)
    workload = workload_from_options(table.categories, prompts=prompts.workload())
    problem = problem_from_options(table, workload)
    result = run_methods(problem, ["paper"], rng=0)["paper"]
    inputs = plan_inputs("my-table.json", table.source_counts(), workload, prompts=prompts)
    assert inputs["table"] == "my-table.json" and inputs["table_source_counts"] == table.source_counts()
    assert inputs["prompts"]["file"] == str(tmp_path / "p.tsv") and inputs["prompts"]["rows"] == 3
    assert inputs["prompts"]["composition"] == workload.composition and "misrouting" not in inputs
    document = plan_to_dict(problem, result, inputs=inputs)
    validate_plan(document, "<plan>")
    assert document["inputs"]["prompts"]["router"] == prompts.router
    assert document["inputs"]["budget_gpu"] == 1.0  # the problem's own inputs stay beside them


def test_the_python_example_of_the_plan_guide_runs_and_writes_a_plan(tmp_path: Path, monkeypatch) -> None:
    from genedge.optimizer.plan_file import load_plan

    guide = (Path(__file__).parents[1] / "docs" / "plan.md").read_text(encoding="utf-8")
    example = guide.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/plan.md", "exec"), {})
    plan = load_plan(tmp_path / "plan.json").raw
    assert plan["inputs"]["arrivals"] == "open" and plan["inputs"]["slo"]["attainment"] == 0.95
    assert plan["inputs"]["table"].endswith("galaxy-s24.json")


# --- an adaptive profiling run's folder ------------------------------------------------------------


def _settings(prompts: str, **changes):
    from genedge.profiler.autoprofile import AutoprofileSettings

    values = {
        "model": ("replica:tiny",),
        "steps": (2, 3),
        "prompt_source": prompts,
        "category_mapping": "paper4",
        "first_batch": 2,
        "batch": 4,
        "seed": 0,
        "device": "cpu",
        "dtype": None,
        "resolution": 64,
        "guidance_scale": 7.5,
        "clip_backbone": "replica:tiny",
        "clip_pretrained": "none",
    }
    return AutoprofileSettings(**{**values, **changes})


def _p2_prompts(path: Path) -> str:
    rows = "".join(f"prompt {i} of {c}\tArtifacts\t{c}\t\n" for c in ("Basic", "Imagination") for i in range(6))
    path.write_text("Prompt\tCategory\tChallenge\tNote\n" + rows, encoding="utf-8")
    return str(path)


def test_autoprofile_settings_are_written_once_and_a_resume_must_keep_them(tmp_path: Path) -> None:
    from genedge.profiler.autoprofile import SETTINGS_NAME, AutoprofileRun

    prompts = _p2_prompts(tmp_path / "p2.tsv")
    with AutoprofileRun.open(tmp_path / "run", _settings(prompts), threads=1) as run:
        written = json.loads((tmp_path / "run" / SETTINGS_NAME).read_text())
        assert written["steps"] == [2, 3] and written["model"] == ["replica:tiny"] and "threads" not in written
        assert run.keys == {"replica:tiny": "replica:tiny"} and run.batches == [] and run.run_dirs == []
        # Each category's prompts in one seeded order: the same order again on resume.
        assert sorted(run.order) == ["Basic", "Imagination"] and len(run.order["Basic"]) == 6
    with AutoprofileRun.open(tmp_path / "run", _settings(prompts), threads=4) as again:
        assert [p.text for p in again.order["Basic"]] == [p.text for p in run.order["Basic"]]
    with (
        pytest.raises(ValueError, match=r"this run was started with batch = 4 \(not 8\)"),
        AutoprofileRun.open(tmp_path / "run", _settings(prompts, batch=8)),
    ):
        pass
    with pytest.raises(ValueError, match="--first-batch: expected at least 2"):
        _settings(prompts, first_batch=1)


def _measured_batch(out: Path, number: int, steps: int = 2) -> Path:
    """A batch folder as a finished one looks to the run (cells and DONE; its profile run is not read)."""
    from genedge.profiler.autoprofile import BATCHES_DIR

    folder = out / BATCHES_DIR / f"{number:04d}"
    folder.mkdir(parents=True)
    cells = [["replica:tiny", "Basic", steps, 2], ["replica:tiny", "Imagination", steps, 2]]
    (folder / "cells.json").write_text(json.dumps(cells))
    (folder / "DONE").write_text("")
    return folder


def test_a_resume_removes_what_a_kill_left_half_made(tmp_path: Path) -> None:
    from genedge.profiler.autoprofile import BATCHES_DIR, DECISIONS_NAME, AutoprofileRun

    prompts = _p2_prompts(tmp_path / "p2.tsv")
    out = tmp_path / "run"
    measured = _measured_batch(out, 0)
    # A kill before the batch folder's rename, while its cells were written: a folder holding a temporary file.
    unfinished = out / BATCHES_DIR / ".0001.tmp"
    unfinished.mkdir()
    (unfinished / "prompts.tsv").write_text("Prompt\n")
    (unfinished / ".cells.json.k2x9a0_q.tmp").write_text('[["replica:tiny", "Basic"')
    # Kills inside atomic writes: an empty temporary file (killed right after creating it), a whole one.
    (measured / ".DONE.0a1b2c3d.tmp").write_text("")
    (out / ".table.json.abcdefgh.tmp").write_text("")
    (measured / "run" / "records").mkdir(parents=True)
    (measured / "run" / "records" / ".shard-0-00000.parquet.zz9y8x7w.tmp").write_bytes(b"PAR1")
    (out / DECISIONS_NAME).write_text('{"batch": 1, "choice": null, "stop": "target reached"}\n{"batch": 2, "sto')
    with AutoprofileRun.open(out, _settings(prompts)) as run:
        assert run.batches == [measured] and not unfinished.exists()
        assert run.used == {("replica:tiny", "Basic", 2): 2, ("replica:tiny", "Imagination", 2): 2}
        assert run.run_dirs == [measured / "run"]
        assert not [path for path in out.rglob("*.tmp")]
        # The line a kill cut short is gone; the whole one before it stands, as the decision for batch 1.
        assert run.logged_decision() == {"batch": 1, "choice": None, "stop": "target reached"}
        assert not run.append_decision({"choice": None, "stop": "target reached"})  # no repeated line
        assert run.append_decision({"choice": None, "stop": "budget spent"})  # another decision is logged
    lines = [json.loads(line) for line in (out / DECISIONS_NAME).read_text().splitlines()]
    assert [line["stop"] for line in lines] == ["target reached", "budget spent"]


def test_a_logged_choice_stands_and_is_not_decided_again(tmp_path: Path) -> None:
    from genedge.profiler.autoprofile import DECISIONS_NAME, AutoprofileRun

    prompts = _p2_prompts(tmp_path / "p2.tsv")
    out = tmp_path / "run"
    _measured_batch(out, 0)
    choice = {"model": "replica:tiny", "category": "Basic", "steps": 3, "images": 4, "reduction": 0.5}
    (out / DECISIONS_NAME).write_text(json.dumps({"batch": 1, "choice": choice, "stop": None}) + "\n")
    with AutoprofileRun.open(out, _settings(prompts)) as run:
        assert run.logged_decision()["choice"] == choice
        with pytest.raises(ValueError, match=r"decisions.jsonl: batch 1's choice is logged already; measure it"):
            run.append_decision({"choice": None, "stop": "budget spent"})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda out: (out / "batches" / "0001" / "cells.json").unlink(), r"0001/cells.json: file: missing"),
        (
            lambda out: (out / "batches" / "0001" / "cells.json").write_text('[["other", "Basic", 2, 2]]'),
            r"0001/cells.json: entry 0: expected \[model key, category, steps, images\] of this run",
        ),
        (lambda out: (out / "batches" / "0000").rename(out / "batches" / "0002"), r"batches: .*0000 is missing"),
        (
            lambda out: (out / "decisions.jsonl").write_text('{"batch": 7}\n'),
            r"decisions.jsonl: line 1: field 'batch': expected 0 to 2, got 7",
        ),
        (
            lambda out: (out / "decisions.jsonl").write_text('{"batch": 2, "stop": null, "choice": {"model": "x"}}\n'),
            r"decisions.jsonl: line 1: fields 'stop', 'choice': expected a stop or a cell of this run",
        ),
    ],
)
def test_an_autoprofile_folder_damaged_by_hand_is_refused_naming_file_and_field(
    tmp_path: Path, damage: Callable[[Path], object], message: str
) -> None:
    from genedge.profiler.autoprofile import AutoprofileRun

    prompts = _p2_prompts(tmp_path / "p2.tsv")
    out = tmp_path / "run"
    _measured_batch(out, 0)
    _measured_batch(out, 1, steps=3)
    damage(out)
    with pytest.raises(ValueError, match=message), AutoprofileRun.open(out, _settings(prompts)) as run:
        run.logged_decision()


def test_a_batch_asking_for_more_prompts_than_a_category_has_is_refused(tmp_path: Path) -> None:
    from genedge.profiler.autoprofile import AutoprofileRun

    with AutoprofileRun.open(tmp_path / "run", _settings(_p2_prompts(tmp_path / "p2.tsv"))) as run:
        with pytest.raises(
            ValueError, match=r"category .Basic.: 6 prompts in .*too few for 7 images of replica:tiny at 2 steps"
        ):
            run.measure("replica:tiny", 2, {"Basic": 7})
        assert run.batches == [] and not (tmp_path / "run" / "batches").exists()
