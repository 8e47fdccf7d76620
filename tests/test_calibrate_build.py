"""From Parquet records to a table: known parameters come back, and the table is byte-stable."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from genedge.calibrate import calibrate_runs, fit_and_write, load_table, save_table
from genedge.optimizer import Problem, Workload
from genedge.testing import QualityTruth, SyntheticModel, synthetic_run, write_run

CATEGORIES = ("Basic", "Detail", "Imagination", "Complex")
STEPS = (10, 20, 30, 40, 50)
PROMPTS = 40
MODELS = (
    SyntheticModel(
        key="small",
        quality={c: QualityTruth(a=29 + i, b=6.0, kappa=8.0, std=3.0) for i, c in enumerate(CATEGORIES)},
        overhead_s=0.4,
        per_step_s=0.05,
        step_noise_s=0.004,
        overhead_noise_s=0.01,
        memory_bytes={
            "peak_torch_allocated_bytes": 2_000_000_000,
            "peak_torch_reserved_bytes": 2_400_000_000,
            "peak_nvml_process_bytes": 2_900_000_000,
            "peak_nvml_device_bytes": 3_500_000_000,
        },
    ),
    SyntheticModel(
        key="large",
        quality={c: QualityTruth(a=32 + i, b=9.0, kappa=12.0, std=2.5) for i, c in enumerate(CATEGORIES)},
        overhead_s=1.2,
        per_step_s=0.2,
        step_noise_s=0.01,
        overhead_noise_s=0.02,
        memory_bytes={"peak_torch_allocated_bytes": 7_000_000_000, "peak_torch_reserved_bytes": 8_000_000_000},
    ),
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest, records = synthetic_run(MODELS, steps=STEPS, prompts_per_category=PROMPTS, rng=0)
    return write_run(tmp_path_factory.mktemp("run") / "run", manifest, records, shards=3)


def test_calibration_recovers_known_quality_latency_and_memory(run_dir: Path) -> None:
    table = calibrate_runs([run_dir])
    assert table.categories == CATEGORIES
    for truth in MODELS:
        model = table.models[truth.key]
        assert model.steps == STEPS and model.default_steps == 50
        for category, law in truth.quality.items():
            for steps, cell in model.quality[category].items():
                # Tolerance: 4 standard errors of a mean (σ/√n) and of an MLE std (σ/√(2n)).
                assert cell.n == PROMPTS
                assert abs(cell.mean - law.mean(steps)) < 4 * law.std / np.sqrt(PROMPTS)
                assert abs(cell.std - law.std) < 4 * law.std / np.sqrt(2 * PROMPTS)
                assert cell.source == "measured" and cell.ref == "measured:quality"
            curve = model.curves[category]
            assert curve.form == "saturating_exp" and curve.valid_steps == (10, 50)
            # The curve is judged where it is used (the profiled range), within 4 SE of a cell mean.
            for s in range(10, 51, 5):
                assert model.quality_at(category, s)[0] == pytest.approx(
                    law.mean(s), abs=4 * law.std / np.sqrt(PROMPTS)
                )
        latency = model.latency
        # The step noise averages out over ≥ 10 steps; 2 % of the true values is > 4 SE here.
        assert latency.overhead_s == pytest.approx(truth.overhead_s, rel=0.02)
        assert latency.per_step_s == pytest.approx(truth.per_step_s, rel=0.02)
        assert latency.n == len(STEPS) * len(CATEGORIES) * PROMPTS and latency.r2 > 0.99
        assert latency.step_p50_s == pytest.approx(truth.per_step_s, rel=0.02)
        assert latency.step_p95_s == pytest.approx(truth.per_step_s + 1.645 * truth.step_noise_s, rel=0.02)
        assert sorted(latency.stages) == list(STEPS)
        assert latency.stages[30].denoise_s == pytest.approx(30 * truth.per_step_s, rel=0.01)
        assert latency.stages[30].text_encode_s == pytest.approx(0.3 * truth.overhead_s, rel=0.05)
        assert latency.batch_size == 1
    small, large = table.models["small"].memory, table.models["large"].memory
    assert (small.peak_bytes, small.kind, small.nvml_device_bytes) == (2_900_000_000, "nvml_process", 3_500_000_000)
    assert (large.peak_bytes, large.kind, large.nvml_process_bytes) == (8_000_000_000, "torch_reserved", None)
    assert table.exclusions == ()
    assert table.sources["measured:quality"]["runs"] == "synthetic"


@pytest.mark.slow
def test_table_is_byte_identical_on_rerun_and_independent_of_sharding(run_dir: Path, tmp_path: Path) -> None:
    first = save_table(calibrate_runs([run_dir]), tmp_path / "a.json").read_bytes()
    second = save_table(calibrate_runs([run_dir]), tmp_path / "b.json").read_bytes()
    manifest, records = synthetic_run(MODELS, steps=STEPS, prompts_per_category=PROMPTS, rng=0)
    reshuffled = write_run(tmp_path / "one-shard", manifest, records.sample(frac=1.0, random_state=3), shards=1)
    third = save_table(calibrate_runs([reshuffled]), tmp_path / "c.json").read_bytes()
    assert first == second == third
    assert load_table(tmp_path / "a.json") == calibrate_runs([run_dir])


def test_two_step_counts_fall_back_to_interpolation_with_a_warning(tmp_path: Path) -> None:
    manifest, records = synthetic_run(MODELS[:1], steps=(10, 30), prompts_per_category=5, rng=1)
    with pytest.warns(
        UserWarning,
        match=r"small/Basic: quality-versus-steps curve falls back to linear "
        r"interpolation .* on \[10, 30\] steps: only 2 step count",
    ):
        table = calibrate_runs([write_run(tmp_path / "run", manifest, records)])
    model = table.models["small"]
    assert {c.form for c in model.curves.values()} == {"linear_interpolation"}
    lo, hi = model.quality["Basic"][10].mean, model.quality["Basic"][30].mean
    assert model.quality_at("Basic", 20)[0] == pytest.approx((lo + hi) / 2)
    with pytest.raises(KeyError, match="no cell at 40 steps and no curve covering it"):
        model.quality_at("Basic", 40)


def test_single_step_count_derives_latency_from_stages_and_says_so(tmp_path: Path) -> None:
    manifest, records = synthetic_run(MODELS[1:], steps=(20,), prompts_per_category=5, rng=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = calibrate_runs([write_run(tmp_path / "run", manifest, records)])
    assert any(
        "large: no latency line can be fitted (Expected measurements at two or more step counts" in str(w.message)
        and "derived from the stage timings" in str(w.message)
        for w in caught
    )
    latency = table.models["large"].latency
    assert (latency.source, latency.ref, latency.r2) == ("derived", "derived:latency-stages", None)
    assert latency.per_step_s == pytest.approx(0.2, rel=0.01)
    assert latency.overhead_s == pytest.approx(1.2, rel=0.05)
    assert table.sources["derived:latency-stages"]["kind"] == "derived"
    # Means over the images: their standard errors shrink with n and are far below the means.
    assert 0 < latency.per_step_se_s < 0.01 * latency.per_step_s
    assert 0 < latency.overhead_se_s < 0.1 * latency.overhead_s


ENERGY_STEPS = (10, 20, 30, 40)
METERED = SyntheticModel(
    key="metered",
    quality={c: QualityTruth(a=31.0, b=6.0, kappa=8.0, std=3.0) for c in CATEGORIES[:2]},
    overhead_s=0.5,
    per_step_s=0.08,
    step_noise_s=0.002,
    memory_bytes={"peak_torch_reserved_bytes": 3_000_000_000, "peak_rss_bytes": 4_500_000_000},
    overhead_j=40.0,
    per_step_j=6.0,
    energy_noise_j=2.0,
)


def test_energy_line_is_recovered_with_its_errors(tmp_path: Path) -> None:
    unmetered = replace(METERED, key="unmetered", overhead_j=None, per_step_j=None)
    manifest, records = synthetic_run([METERED, unmetered], steps=ENERGY_STEPS, prompts_per_category=15, rng=5)
    table = calibrate_runs([write_run(tmp_path / "run", manifest, records)])
    energy = table.models["metered"].energy
    assert (energy.source, energy.ref, energy.n) == ("measured", "measured:energy", len(ENERGY_STEPS) * 2 * 15)
    # Tolerance: 4 standard errors of each coefficient; the residual spread is the noise put in.
    assert abs(energy.overhead_j - 40.0) < 4 * energy.overhead_se_j
    assert abs(energy.per_step_j - 6.0) < 4 * energy.per_step_se_j
    assert energy.residual_std_j == pytest.approx(2.0, rel=0.2)
    metered = records[records["model_key"] == "metered"]
    assert energy.average_power_w == pytest.approx((metered["energy_j"] / metered["total_s"]).mean())
    assert energy.joules(25) == pytest.approx(energy.overhead_j + 25 * energy.per_step_j)
    assert table.models["unmetered"].energy is None
    assert "measured:energy" in table.sources and "derived:energy-power" not in table.sources
    # A GPU run's peak is still its GPU rung; the host peak is carried beside it.
    memory = table.models["metered"].memory
    assert (memory.peak_bytes, memory.kind, memory.rss_bytes) == (3_000_000_000, "torch_reserved", 4_500_000_000)
    assert load_table(save_table(table, tmp_path / "t.json")) == table


def test_energy_at_one_step_count_scales_the_latency_line_by_the_mean_power(tmp_path: Path) -> None:
    manifest, records = synthetic_run([METERED], steps=(20,), prompts_per_category=5, rng=6)
    with pytest.warns(UserWarning, match=r"metered: no energy line can be fitted .* scaled by the mean power"):
        table = calibrate_runs([write_run(tmp_path / "run", manifest, records)])
    model = table.models["metered"]
    watts = records["energy_j"].sum() / records["total_s"].sum()
    assert (model.energy.source, model.energy.ref) == ("derived", "derived:energy-power")
    assert model.energy.per_step_j == pytest.approx(watts * model.latency.per_step_s)
    assert model.energy.joules(20) == pytest.approx(records["energy_j"].mean(), rel=0.01)


def test_a_cpu_run_measures_memory_as_the_process_rss(tmp_path: Path) -> None:
    cpu = replace(
        METERED,
        memory_bytes={"peak_rss_bytes": 6_000_000_000, "peak_system_memory_bytes": 9_000_000_000},
        overhead_j=None,
        per_step_j=None,
    )
    manifest, records = synthetic_run([cpu], steps=(10, 20), prompts_per_category=4, device_memory_bytes=None, rng=7)
    table = calibrate_runs([write_run(tmp_path / "run", manifest, records)])
    memory = table.models["metered"].memory
    assert (memory.peak_bytes, memory.kind, memory.source, memory.ref) == (
        6_000_000_000,
        "rss",
        "measured",
        "measured:memory-rss",
    )
    assert (memory.system_memory_bytes, memory.torch_allocated_bytes) == (9_000_000_000, None)
    assert "measured:memory" not in table.sources
    # The planner reads the RSS peak like any other; a device without a memory size sets no limit.
    problem = Problem.from_table(table, Workload.from_counts({"Basic": 2, "Detail": 1}))
    assert problem.device_memory_bytes is None and list(problem.memory_bytes) == [6_000_000_000]
    limited = Problem.from_table(
        table, Workload.from_counts({"Basic": 2, "Detail": 1}), device_memory_bytes=8_000_000_000
    )
    assert limited.fits_in_memory(np.ones(1, dtype=bool))


@pytest.mark.slow
def test_energy_gets_its_figure_only_where_measured(tmp_path: Path) -> None:
    manifest, records = synthetic_run([METERED], steps=(10, 20), prompts_per_category=3, rng=8)
    run = write_run(tmp_path / "run", manifest, records)
    _, _, written = fit_and_write([run], tmp_path / "t.json", tmp_path / "fig")
    assert {p.stem for p in written} == {
        "scores_metered",
        "quality_vs_steps",
        "latency_vs_steps",
        "energy_vs_steps",
        "memory_ladder",
    }
    unmetered = replace(METERED, overhead_j=None, per_step_j=None)
    run = write_run(tmp_path / "bare", *synthetic_run([unmetered], steps=(10, 20), prompts_per_category=3, rng=8))
    _, _, written = fit_and_write([run], tmp_path / "u.json", tmp_path / "fig-u")
    assert "energy_vs_steps" not in {p.stem for p in written}
