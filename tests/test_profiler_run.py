"""One measurement run end to end on tiny random-weight replicas: records, manifest, CLIPScore, resume, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import PARTIPROMPTS
from PIL import Image

from genedge.contract import MANIFEST_SCHEMA_VERSION, get_category_mapping, settings_sha256
from genedge.profiler import ClipScorer, ProfileConfig, profile, read_manifest, read_records, record_schema
from genedge.profiler import run as profiler_run_module
from genedge.profiler.monitor import Monitor

MODELS = ("replica:tiny", "replica:tiny-xl")
STEPS = (2, 3)
# One prompt per paper category: every per-category, per-shard and per-batch property below shows as well
# with one as with two, at half the images.
PER_CATEGORY = 1
N_PROMPTS = 4 * PER_CATEGORY
N_IMAGES = len(MODELS) * len(STEPS) * N_PROMPTS
# Stage windows are contiguous on the device clock; the host total adds only the final synchronize.
STAGE_SUM_REL_TOL = 0.05
STAGE_SUM_ABS_TOL_S = 0.002


def profiler_prompt_source(folder: Path) -> str:
    """PartiPrompts when present, else a file in its format written here (8 prompts, two per paper category)."""
    if PARTIPROMPTS.is_file():
        return str(PARTIPROMPTS)
    rows = [
        (f"prompt number {i} about a {c.lower()} scene", "Animals", c, "")
        for i, c in enumerate(["Basic", "Complex", "Simple Detail", "Imagination"] * 2)
    ]
    path = folder / "prompts.tsv"
    path.write_text(
        "Prompt\tCategory\tChallenge\tNote\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8"
    )
    return str(path)


@pytest.fixture(scope="module")
def profiler_config(tmp_path_factory: pytest.TempPathFactory) -> ProfileConfig:
    return ProfileConfig(
        models=MODELS,
        steps=STEPS,
        prompts=profiler_prompt_source(tmp_path_factory.mktemp("prompts")),
        per_category=PER_CATEGORY,
        resolution=64,
        device="cpu",
        clip_backbone="replica:tiny",
        clip_pretrained=None,
        save_images=True,
        flush_every=4,
    )


@pytest.fixture(scope="module")
def profiler_run(profiler_config: ProfileConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = profile(profiler_config, run_dir)
    assert (result.recorded, result.skipped, result.failed) == (N_IMAGES, 0, 0)
    return run_dir


@pytest.mark.slow
def test_one_row_per_image_with_the_record_schema(profiler_run: Path) -> None:
    frame = read_records(profiler_run)
    assert len(frame) == N_IMAGES
    assert not frame.duplicated(["model_key", "steps", "seed", "prompt_id"]).any()
    assert set(frame["status"]) == {"ok"} and frame["is_replica"].all()
    assert frame.groupby("model_key")["category"].value_counts().eq(len(STEPS) * PER_CATEGORY).all()
    for shard in (profiler_run / "records").glob("shard-*.parquet"):
        assert pq.read_schema(shard).remove_metadata().equals(record_schema())
    assert len(list((profiler_run / "records").glob("shard-0-*.parquet"))) == N_IMAGES // 4  # flush_every=4


@pytest.mark.slow
def test_step_latencies_and_stage_windows(profiler_run: Path) -> None:
    frame = read_records(profiler_run)
    assert (frame["step_latencies_s"].map(len) == frame["steps"]).all()
    assert (frame["num_timesteps"] == frame["steps"]).all()
    assert (frame["step_latencies_s"].map(min) > 0).all()
    stages = frame["text_encode_s"] + frame["denoise_s"] + frame["decode_s"]
    assert ((stages - frame["total_s"]).abs() <= STAGE_SUM_REL_TOL * frame["total_s"] + STAGE_SUM_ABS_TOL_S).all()
    # The denoise window holds every step.
    assert (frame["step_latencies_s"].map(sum) <= frame["denoise_s"] + 1e-6).all()


@pytest.mark.slow
def test_on_a_cpu_memory_is_the_resident_peak_and_every_null_says_why(profiler_run: Path) -> None:
    frame = read_records(profiler_run)
    for column in (
        "peak_torch_allocated_bytes",
        "peak_torch_reserved_bytes",
        "peak_nvml_process_bytes",
        "peak_nvml_device_bytes",
        "peak_system_memory_bytes",
        "energy_j",
        "average_power_w",
    ):
        assert frame[column].isna().all()
    assert (frame["peak_rss_bytes"] > 50 * 2**20).all()  # the process holds torch and the model at least
    for column in ("peak_torch_allocated_bytes", "peak_nvml_process_bytes", "peak_system_memory_bytes"):
        assert frame["memory_note"].str.contains(f"{column}: ").all()
    assert frame["memory_note"].str.contains("not a CUDA device").all()
    assert frame["energy_note"].str.contains("NVML").all()
    manifest = read_manifest(profiler_run)
    assert manifest["nvml"]["available"] is False and manifest["nvml"]["reason"]
    assert manifest["energy"]["available"] is False and manifest["energy"]["reason"]


@pytest.mark.slow
def test_cold_start_is_recorded_per_model_beside_the_warm_rows(profiler_run: Path) -> None:
    frame = read_records(profiler_run)
    per_model = frame.groupby("model_key")[["model_load_s", "first_call_s"]].nunique()
    assert (per_model == 1).all().all()  # one load and one first call per model in this process
    assert (frame["model_load_s"] > 0).all() and (frame["first_call_s"] > 0).all()


@pytest.mark.slow
def test_manifest(profiler_run: Path, profiler_config: ProfileConfig) -> None:
    manifest = read_manifest(profiler_run)
    assert manifest["schema_version"] == MANIFEST_SCHEMA_VERSION
    assert manifest["settings_sha256"] == settings_sha256(manifest)
    assert read_records(profiler_run)["settings_sha256"].eq(manifest["settings_sha256"]).all()
    host = manifest["host"]
    assert host["threads"] == torch.get_num_threads() and host["grad_mode"] == "torch.inference_mode"
    assert host["logical_cpus"] >= 1 and host["total_ram_bytes"] > 2**30 and host["os"]
    assert set(manifest["clip_convention"]) == {"backbone", "pretrained", "formula", "truncation", "preprocess"}
    assert manifest["device"]["memory_bytes"] is None and manifest["dtype"] == "float32"
    assert [m["key"] for m in manifest["models"]] == list(MODELS)
    assert all(m["is_replica"] and m["unet_params"] > 0 for m in manifest["models"])
    assert [m["resolution"] for m in manifest["models"]] == [64, 64] and manifest["resolution"] == 64
    assert manifest["scheduler"]["class"] == "DDIMScheduler" and "beta_schedule" in manifest["scheduler"]["config"]
    assert manifest["prompt_set"]["n"] == N_PROMPTS
    assert manifest["prompt_set"]["category_mapping"] == get_category_mapping("paper4")
    assert len(manifest["prompt_set"]["prompt_ids"]) == N_PROMPTS
    assert manifest["seeds"] == [0] and manifest["warmup"] == 1 and manifest["batch_size"] == 1
    assert set(manifest["versions"]) == {"python", "torch", "diffusers", "open_clip", "transformers", "genedge"}


@pytest.mark.slow
def test_clip_scores_match_an_independent_computation_from_the_saved_images(profiler_run: Path) -> None:
    frame = read_records(profiler_run).head(12)
    scorer = ClipScorer("replica:tiny", None, device=torch.device("cpu"))  # same seeded random weights
    images = [Image.open(profiler_run / "images" / f"{digest}.png").convert("RGB") for digest in frame["image_sha256"]]
    with torch.no_grad():
        image_features = torch.nn.functional.normalize(
            scorer.model.encode_image(torch.stack([scorer.preprocess(i) for i in images])), dim=-1
        )
        text_features = torch.nn.functional.normalize(
            scorer.model.encode_text(scorer.tokenizer(list(frame["prompt"]))), dim=-1
        )
    expected = (100 * (image_features * text_features).sum(-1).clamp(min=0)).tolist()
    assert frame["clip_score"].tolist() == pytest.approx(expected, abs=1e-4)
    assert frame["clip_backbone"].eq("replica:tiny").all() and frame["clip_pretrained"].eq("none").all()


@pytest.mark.slow
def test_rerun_skips_everything_and_other_settings_are_refused(
    profiler_run: Path, profiler_config: ProfileConfig
) -> None:
    again = profile(profiler_config, profiler_run)
    assert (again.recorded, again.skipped) == (0, N_IMAGES)
    with pytest.raises(ValueError, match=r"manifest.json: field 'settings_sha256': .*\(steps differ\).* another --out"):
        profile(dataclasses.replace(profiler_config, steps=(4,)), profiler_run)
    assert len(read_records(profiler_run)) == N_IMAGES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": ("replica:nope",)}, r"Available: bk-sdm-base, .*tiny-xl"),
        ({"steps": (0, 2)}, r"Expected steps as positive integers, but got \[0, 2\]"),
        ({"guidance_scale": 750.0}, r"guidance_scale: expected a guidance scale <= 100, but got 750\.0"),
        ({"threads": 0}, r"threads: expected a thread count >= 1, but got 0"),
        (
            {"category_mapping": "category", "prompts": "no-category"},
            r"Category: category mapping 'category' reads this column",
        ),
        ({"prompts": "empty"}, r"got an empty prompt set"),
    ],
)
def test_bad_input_fails_before_any_work(
    profiler_config: ProfileConfig, tmp_path: Path, change: dict, message: str
) -> None:
    prompts = {
        "no-category": "Prompt\tChallenge\na cat\tBasic\n",
        "empty": "Prompt\tCategory\tChallenge\tNote\na cat\tAnimals\tQuantity\t\n",
    }
    if change.get("prompts") in prompts:
        path = tmp_path / f"{change['prompts']}.tsv"
        path.write_text(prompts[change["prompts"]], encoding="utf-8")
        change = change | {"prompts": str(path)}
    with pytest.raises(ValueError, match=message):
        profile(dataclasses.replace(profiler_config, **change), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("warmup", [0, 1])
def test_a_failing_generation_leaves_rows_and_the_run_goes_on(
    profiler_config: ProfileConfig, tmp_path: Path, warmup: int
) -> None:
    # 2^20-pixel sides: the latents alone would need terabytes, so the CPU allocator refuses at once.
    huge = dataclasses.replace(profiler_config, models=("replica:tiny",), steps=(2,), resolution=2**20, warmup=warmup)
    result = profile(huge, tmp_path / "run")
    frame = read_records(tmp_path / "run")
    assert (result.recorded, result.failed) == (N_PROMPTS, N_PROMPTS) and len(frame) == N_PROMPTS
    assert frame["status"].eq("error").all() and frame["error"].str.contains("allocate").all()
    assert frame["step_latencies_s"].isna().all() and frame["clip_score"].isna().all()
    assert frame["memory_note"].str.contains("peak_rss_bytes: no call was measured for this image").all()
    assert frame["energy_note"].str.startswith("no call was measured").all()


class _MeteredWindow:
    """A monitor window whose call drew 12 J at 3 W: NVML's energy counter needs an NVIDIA driver."""

    def __init__(self, window: Any) -> None:
        self.window = window

    def __enter__(self) -> _MeteredWindow:
        self.window.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.window.__exit__(*exc)
        notes = {k: v for k, v in self.window.reading.notes.items() if k not in ("energy_j", "average_power_w")}
        self.reading = dataclasses.replace(self.window.reading, energy_j=12.0, average_power_w=3.0, notes=notes)


class _MeteredMonitor(Monitor):
    def window(self, *args: Any, **kwargs: Any) -> _MeteredWindow:
        return _MeteredWindow(super().window(*args, **kwargs))


def test_a_calls_energy_is_shared_by_the_images_of_its_batch(
    profiler_config: ProfileConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profiler_run_module, "Monitor", _MeteredMonitor)
    batched = dataclasses.replace(
        profiler_config, models=("replica:tiny",), steps=(2,), batch_size=3, save_images=False, warmup=0
    )
    profile(batched, tmp_path / "run")
    frame = read_records(tmp_path / "run")
    calls = frame.groupby("total_s").size().sort_index()  # one total per call, shared by its images
    assert sorted(calls.tolist()) == [1, 3]  # 4 prompts in batches of 3 (per seed): a full and a partial batch
    for _, rows in frame.groupby("total_s"):
        assert rows["energy_j"].eq(12.0 / len(rows)).all()
    assert frame["average_power_w"].eq(3.0).all() and frame["energy_note"].isna().all()


@pytest.mark.slow
def test_retry_failed_generates_failed_images_again_and_keeps_their_failure_rows(
    profiler_config: ProfileConfig, tmp_path: Path
) -> None:
    small = dataclasses.replace(profiler_config, models=("replica:tiny",), steps=(2,), save_images=False)
    run_dir = tmp_path / "run"
    profile(small, run_dir)
    # A transient failure: mark the first recorded image of the first shard as an error.
    shard = sorted((run_dir / "records").glob("shard-*.parquet"))[0]
    table = pq.read_table(shard, schema=record_schema())
    status = table.column("status").to_pylist()
    status[0] = "error"
    pq.write_table(
        table.set_column(table.schema.get_field_index("status"), "status", pa.array(status, type=pa.string())), shard
    )
    failed_prompt = table.column("prompt_id")[0].as_py()
    assert profile(small, run_dir).recorded == 0  # a plain resume keeps the failure
    assert profile(small, run_dir, retry_failed=True).recorded == 1
    frame = read_records(run_dir)
    assert len(frame) == N_PROMPTS + 1
    assert sorted(frame.loc[frame.prompt_id == failed_prompt, "status"]) == ["error", "ok"]
    assert profile(small, run_dir, retry_failed=True).recorded == 0  # nothing left to retry
