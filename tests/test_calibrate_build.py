"""From Parquet records to a table: known parameters come back, and the table is byte-stable."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from genedge.calibrate import calibrate_runs, load_table, save_table
from genedge.calibrate.synthetic import QualityTruth, SyntheticModel, synthetic_run, write_run

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
