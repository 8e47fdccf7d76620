"""`genedge profile` on real diffusers files: a pipeline saved to a folder, and the same pipeline as a hub id
read offline from a Hugging Face cache; and the offline CLIP error that comes before any generation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import genedge_in_process, run_genedge
from tiny_pipelines import TINY_COMMIT, hub_cache_env, lay_out_hub_cache, use_hub_cache

from genedge.profiler import read_manifest, read_records

TIMEOUT_S = 600
STEPS = (2, 3)
N_PROMPTS = 4
NATIVE = 16  # the saved tiny pipeline's configs: UNet sample_size 8 × VAE factor 2
REPO = "genedge-test/tiny"
# Stage windows are contiguous on the device clock; the host total adds only the final synchronize.
STAGE_SUM_REL_TOL = 0.05
STAGE_SUM_ABS_TOL_S = 0.002


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.tsv"
    rows = "".join(f"a {c.lower()} scene number {i}\tAnimals\t{c}\t\n" for i, c in enumerate(["Basic", "Complex"] * 2))
    path.write_text("Prompt\tCategory\tChallenge\tNote\n" + rows, encoding="utf-8")
    return path


def _genedge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_genedge(*args, env=env, timeout=TIMEOUT_S)


def _profile(
    model: str, prompts: Path, out: Path, env: dict[str, str] | None, capsys: pytest.CaptureFixture[str] | None
) -> None:
    """``genedge profile`` of ``model``: in a new process under ``env``, or in this one where ``capsys`` is given."""
    argv = (
        "profile",
        "--model",
        model,
        "--steps",
        ",".join(map(str, STEPS)),
        "--prompts",
        str(prompts),
        "--per-category",
        "2",  # every prompt: two of each category
        "--category-mapping",
        "challenge",
        "--device",
        "cpu",
        "--clip-backbone",
        "replica:tiny",
        "--clip-pretrained",
        "none",
        "--no-progress",
        "--out",
        str(out),
    )
    result = _genedge(*argv, env=env) if capsys is None else genedge_in_process(capsys, *argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"recorded {len(STEPS) * N_PROMPTS} images (0 oom/error)" in result.stdout
    assert "profile: " in result.stdout and "ETA" in result.stdout  # --no-progress prints a line per shard


def _check_run(capsys: pytest.CaptureFixture[str], out: Path, model: str) -> dict:
    frame = read_records(out)
    assert len(frame) == len(STEPS) * N_PROMPTS and frame["status"].eq("ok").all()
    assert not frame.duplicated(["model_key", "steps", "seed", "prompt_id"]).any()
    assert frame["model_key"].eq(model).all() and not frame["is_replica"].any()
    assert (frame["step_latencies_s"].map(len) == frame["steps"]).all()
    stages = frame["text_encode_s"] + frame["denoise_s"] + frame["decode_s"]
    assert ((stages - frame["total_s"]).abs() <= STAGE_SUM_REL_TOL * frame["total_s"] + STAGE_SUM_ABS_TOL_S).all()
    assert frame["resolution"].eq(NATIVE).all() and frame["clip_score"].between(0, 100).all()
    manifest = read_manifest(out)
    (entry,) = manifest["models"]
    assert entry["key"] == model and entry["resolution"] == NATIVE and manifest["resolution"] is None
    assert entry["scheduler"]["class"] == "DDIMScheduler" and entry["unet_params"] > 0
    shown = genedge_in_process(capsys, "profile", "show", out)  # reading a run needs no fresh interpreter
    assert shown.returncode == 0, shown.stderr
    assert "problem:" not in shown.stdout and "total_s_p50" in shown.stdout and "step_ms_p99" in shown.stdout
    return manifest


@pytest.mark.slow
def test_profile_a_pipeline_saved_to_a_folder(
    capsys: pytest.CaptureFixture[str], prompts: Path, tmp_path: Path
) -> None:
    # The folder as a newcomer without a hub makes it: `genedge profile save-replica`, save_pretrained's layout.
    folder = tmp_path / "my-pipeline"
    saved = _genedge("profile", "save-replica", "tiny", str(folder))
    assert saved.returncode == 0, saved.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "unet",
        "vae",
    ]
    again = genedge_in_process(capsys, "profile", "save-replica", "tiny", folder)
    assert again.returncode == 2 and "expected a new or empty folder" in again.stderr
    out = _profile_run(str(folder), prompts, tmp_path)  # as a user runs it, in a new process
    manifest = _check_run(capsys, out, str(folder))
    assert manifest["models"][0]["revision"] is None  # a local folder has no hub revision
    # The run calibrates: on a CPU the measured memory is the process's resident peak.
    calibrated = genedge_in_process(capsys, "calibrate", out, "--out", tmp_path / "table.json")
    assert calibrated.returncode == 0, calibrated.stderr[-2000:]
    memory = json.loads((tmp_path / "table.json").read_text(encoding="utf-8"))["models"][str(folder)]["memory"]
    assert memory["kind"] == "rss" and memory["peak_bytes"] == read_records(out)["peak_rss_bytes"].max()


def _profile_run(
    model: str,
    prompts: Path,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    capsys: pytest.CaptureFixture[str] | None = None,
) -> Path:
    out = tmp_path / "run"
    _profile(model, prompts, out, env, capsys)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("revision", ["", "@main", f"@{TINY_COMMIT}"])
def test_profile_a_hub_id_offline_from_the_cache_recording_its_commit(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tiny_folder: Path,
    prompts: Path,
    tmp_path: Path,
    revision: str,
) -> None:
    cache = tmp_path / "hub"
    lay_out_hub_cache(tiny_folder, cache, REPO)
    model = REPO + revision
    if revision:  # only the revision varies: in this process, reading the same cache
        use_hub_cache(monkeypatch, cache)
        out = _profile_run(model, prompts, tmp_path, capsys=capsys)
    else:  # the hub id as a user gives it, to a new process that finds the cache by its environment
        out = _profile_run(model, prompts, tmp_path, hub_cache_env(cache))
    manifest = _check_run(capsys, out, model)
    assert manifest["models"][0]["revision"] == TINY_COMMIT
    assert read_records(out)["model_revision"].eq(TINY_COMMIT).all()


@pytest.mark.slow
def test_a_hub_id_missing_from_the_offline_cache_is_one_line(prompts: Path, tmp_path: Path) -> None:
    result = _genedge(
        "profile",
        "--model",
        "genedge-test/absent",
        "--steps",
        "2",
        "--prompts",
        str(prompts),
        "--category-mapping",
        "challenge",
        "--clip-backbone",
        "replica:tiny",
        "--clip-pretrained",
        "none",
        "--out",
        str(tmp_path / "run"),
        env=hub_cache_env(tmp_path / "empty-hub"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "genedge-test/absent" in result.stderr
    assert not (tmp_path / "run" / "records").exists()


@pytest.mark.slow
def test_offline_without_clip_weights_stops_before_any_generation(prompts: Path, tmp_path: Path) -> None:
    result = _genedge(
        "profile",
        "--model",
        "replica:tiny",
        "--steps",
        "2",
        "--prompts",
        str(prompts),
        "--category-mapping",
        "challenge",
        "--out",
        str(tmp_path / "run"),
        env={"HF_HUB_CACHE": str(tmp_path / "empty-hub"), "HF_HOME": str(tmp_path / "hf-home")},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "CLIP weights for ViT-L-14-quickgelu/openai are not in the local cache" in line
    assert "--clip-pretrained /path/to/open_clip_pytorch_model.bin" in line
    assert "--clip-backbone replica:tiny --clip-pretrained none" in line
    assert not (tmp_path / "run").exists()  # nothing measured, nothing written
