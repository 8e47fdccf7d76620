"""The planning commands end to end: through real subprocesses, and in-process through ``genedge.cli.main``
(the same code path without an interpreter start) where a test varies only the input."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import PARTIPROMPTS, genedge_in_process, needs_partiprompts, run_genedge

from genedge.optimizer.plan_file import load_plan


def test_plan_with_no_arguments_prints_plan_and_comparison(default_plan):
    out = default_plan.stdout
    assert "% of its 51 numbers are derived by rule" in out
    assert "workload: 100 requests — Basic 25, Detail 50, Imagination 14, Complex 11" in out
    for method in (
        "genedge",
        "paper",
        "direct-assignment",
        "random-assignment",
        "equal-allocation",
        "optimal-step",
        "exact",
    ):
        assert f"\n{method} " in out
    assert "None" not in out


def test_plan_writes_a_valid_plan(capsys, tmp_path):
    path = tmp_path / "plan.json"
    args = ("--workload", "Basic=5,Detail=20,Complex=3", "--weight", "0.1", "--budget", "0.5", "--out", path)
    result = genedge_in_process(capsys, "plan", *args)
    assert result.returncode == 0, result.stderr
    document = load_plan(path)
    plan = document.raw
    assert plan["method"] == "genedge" and plan["seed"] == 0
    # The typed figures are the document's own numbers.
    figures = document.predicted
    assert (figures.utility, figures.mean_delay_s, figures.p95_delay_s, figures.mean_clipscore) == tuple(
        plan["predicted"][name] for name in ("utility", "mean_delay_s", "p95_delay_s", "mean_clipscore")
    )
    assert figures.stable and figures.feasible and figures.slo_attainment is None
    assert set(plan["routing"]) == {"Basic", "Detail", "Complex"}
    deployed = {k: m for k, m in plan["models"].items() if m["deployed"]}
    assert deployed and sum(m["share"] for m in plan["models"].values()) == pytest.approx(0.5)
    assert all(0 < m["realization"]["cuda_mps_active_thread_percentage"] <= 100 for m in deployed.values())
    assert {"paper", "direct-assignment", "exact"} <= set(plan["baselines"])
    assert plan["baselines"]["exact"]["upper_bound"] >= plan["predicted"]["utility"] - 1e-9
    assert len(plan["inputs"]["table_sha256"]) == 64


@needs_partiprompts
def test_plan_counts_every_row_of_a_prompt_file(capsys, tmp_path):
    path = tmp_path / "plan.json"
    result = genedge_in_process(capsys, "plan", "--prompts", PARTIPROMPTS, "--weight", "0.001", "--out", path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    document = json.loads(path.read_text())
    prompts = document["inputs"]["prompts"]
    assert prompts["labelled"] == {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
    assert prompts["rows"] == 1632 and sum(prompts["routed"].values()) == 553 and prompts["not_placed"] == 0
    assert prompts["router"] == "paper4-tfidf"
    assert sum(document["inputs"]["workload"].values()) == 1632
    assert "1,632 prompts" in out and "1,079 labelled by Challenge, 553 routed by paper4-tfidf" in out
    misrouting = document["inputs"]["misrouting"]
    assert misrouting["loss"] >= -1e-9
    assert misrouting["served_utility"] == pytest.approx(document["predicted"]["utility"])
    assert "lost to misrouting" in out


@needs_partiprompts
def test_plan_without_a_router_counts_labelled_rows_and_says_what_it_left_out(capsys, tmp_path):
    path = tmp_path / "plan.json"
    result = genedge_in_process(capsys, "plan", "--prompts", PARTIPROMPTS, "--router", "none", "--out", path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert json.loads(path.read_text())["inputs"]["workload"] == {
        "Basic": 272.0,
        "Detail": 544.0,
        "Imagination": 150.0,
        "Complex": 113.0,
    }
    assert "553 not placed" in out and "misrouting" not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "Basic=3,Writing=2"], "workload categories ['Writing'] are not in the table"),
        (["--workload", "Basic"], "--workload: expected CATEGORY=COUNT items"),
        (["--workload", "Basic=many"], "--workload: expected a number for 'Basic', but got 'many'"),
        (["--models", "sd15,sd9"], "models ['sd9'] are not in the table; available: ['sd15', 'sd21', 'sdxl']"),
        (["--budget", "0"], "argument --budget: expected GPUs > 0"),
        (["--compare", "greedy"], "unknown methods ['greedy']"),
        (["--table", "missing.json"], "missing.json"),
        (["--table", "/"], "is a directory"),
        (["--table", "jetson"], "expected an existing file or a shipped calibration table name, one of ['galaxy-s24'"),
        (["--min-clipscore", "40"], "No plan keeps P(CLIPScore < 40) <= 0.05 for every category"),
        (
            ["--memory-gib", "3"],
            (
                "No model fits in the 3.00 GiB of device memory: sd15 needs 4.10 GiB, sd21 needs 4.84 GiB, "
                "sdxl needs 13.04 GiB"
            ),
        ),
    ],
)
def test_plan_bad_input_is_one_clear_line(capsys, args, message):
    result = genedge_in_process(capsys, "plan", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_simulate_writes_results_figures_and_checks(tmp_path):
    out = tmp_path / "sim"
    result = run_genedge(
        "simulate",
        "--loads",
        "10,60",
        "--budgets",
        "1",
        "--weights",
        "0.05",
        "--replications",
        "50",
        "--mix",
        "Basic=1,Detail=2,Complex=1",
        "--out",
        str(out),
        "--figures",
        check=True,
    )
    assert "vs direct-assignment  ≥ on 2/2 points" in result.stdout
    assert "discrete-event check" in result.stdout
    for name in ("results.csv", "checks.csv", "sweep.png", "sweep.svg", "convergence.png", "convergence.svg"):
        assert (out / name).stat().st_size > 0
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["method"] for r in rows} >= {"genedge", "paper", "exact"} and len(rows) == 2 * 7
    assert {r["requests"] for r in rows} == {"10", "60"}
    assert all(float(r["plan_time_s"]) > 0 for r in rows)


def test_help_explains_every_option(capsys):
    result = genedge_in_process(capsys, "plan", "--help")
    assert result.returncode == 0
    text = result.stdout
    for option in (
        "--table",
        "--workload",
        "--prompts",
        "--requests",
        "--budget",
        "--weight",
        "--method",
        "--compare",
        "--out",
        "--models",
        "--memory-gib",
        "--seed",
    ):
        assert option in text


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory):
    """A plan file written by `genedge plan --compare paper`, for the tests that break one field of it."""
    from genedge.cli import main

    path = tmp_path_factory.mktemp("plan") / "plan.json"
    assert main(["plan", "--compare", "paper", "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (
            lambda d: d["routing"]["Basic"].update({"sd15": 0.7, "sd21": 0.7}),
            "routing.Basic",
            "expected probabilities summing to 1",
        ),
        (lambda d: d["models"]["sd21"].update({"share": -0.1}), "models.sd21.share", "expected a share >= 0"),
        (lambda d: d["predicted"].pop("utility"), "predicted.utility", "expected a finite number"),
        (lambda d: d.pop("routing"), "routing", "missing field"),
    ],
)
def test_plan_file_validation_names_the_field(paper_plan, tmp_path, mutate, field, message):
    from genedge.optimizer.plan_file import PlanError

    path = tmp_path / "plan.json"
    document = json.loads(paper_plan.read_text())
    mutate(document)
    path.write_text(json.dumps(document))
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.field_path == field and message in str(info.value)


def test_plan_under_a_memory_limit_deploys_only_what_fits(capsys, tmp_path):
    path = tmp_path / "plan.json"
    result = genedge_in_process(capsys, "plan", "--memory-gib", "14", "--out", path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    plan = json.loads(path.read_text())
    deployed = [k for k, m in plan["models"].items() if m["deployed"]]
    peaks = {"sd15": 4.4e9, "sd21": 5.2e9, "sdxl": 14.0e9}  # the reference table's memory peaks
    assert sum(peaks[k] for k in deployed) <= 14 * 2**30
    assert "paper" in out and "exact" in out


def test_plan_with_a_quality_floor_reports_each_method_shortfall(capsys, tmp_path):
    path = tmp_path / "plan.json"
    out = genedge_in_process(
        capsys, "plan", "--min-clipscore", "21", "--max-shortfall", "0.1", "--out", str(path)
    ).stdout
    assert "worst P(<floor)" in out
    plan = json.loads(path.read_text())
    assert max(plan["predicted"]["shortfall_probability"].values()) <= 0.1 + 1e-9
    assert plan["inputs"]["min_clipscore"] == 21.0


def test_plan_under_a_memory_limit_too_small_for_one_model_leaves_it_out(capsys, tmp_path):
    path = tmp_path / "plan.json"
    result = genedge_in_process(capsys, "plan", "--memory-gib", "10", "--out", str(path))
    assert result.returncode == 0, result.stderr
    assert "left out (too big for the device memory): sdxl needs 13.04 GiB, limit 10.00 GiB" in result.stdout
    assert "None" not in result.stdout
    plan = load_plan(path).raw
    assert plan["inputs"]["left_out"] == {
        "sdxl": {"peak_memory_bytes": 14e9, "reason": "needs 13.04 GiB, limit 10.00 GiB"}
    }
    assert plan["inputs"]["models"] == ["sd15", "sd21"] and set(plan["models"]) == {"sd15", "sd21"}
    assert plan["inputs"]["device_memory_bytes"] == 10 * 2**30
    assert {"paper", "equal-allocation", "optimal-step", "exact"} <= set(plan["baselines"])


@pytest.mark.parametrize("args", [[], ["--workload", "Imagination=2", "--weight", "1"], ["--method", "paper"]])
def test_printed_plan_and_plan_file_agree_on_what_is_deployed(capsys, tmp_path, args):
    path = tmp_path / "plan.json"
    out = genedge_in_process(capsys, "plan", *args, "--out", str(path)).stdout
    plan = load_plan(path).raw
    deployed = [k for k, m in plan["models"].items() if m["deployed"]]
    idle = [k for k, m in plan["models"].items() if not m["deployed"]]
    lines = out.split("plan (", 1)[1].splitlines()
    assert lines[1].split() == ["category", *deployed]
    assert (f"  not deployed: {', '.join(idle)}" in lines) == bool(idle)
    assert all(plan["models"][k]["share"] == 0 for k in idle)
