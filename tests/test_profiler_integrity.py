"""Runs that cannot lose or mix rows: locks, foreign, duplicated, corrupt and mistyped shards, lost and edited
manifests, moves, kills inside a shard's write."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import genedge_env, genedge_in_process
from kill_points import run_killed

from genedge.calibrate import TableError, read_runs
from genedge.contract import ArtifactError, audit_run, lock_path, read_manifest
from genedge.profiler import ProfileConfig, profile, read_records, summarize_run

pytestmark = pytest.mark.slow  # each test profiles a tiny replica on the CPU

KEY = ["model_key", "steps", "seed", "prompt_id"]
N_IMAGES = 8
TIMEOUT_S = 600


def _prompts(folder: Path) -> str:
    rows = [f"prompt {i} about a {c.lower()} scene\tAnimals\t{c}\t\n" for i, c in enumerate(["Basic", "Complex"] * 4)]
    path = folder / "prompts.tsv"
    path.write_text("Prompt\tCategory\tChallenge\tNote\n" + "".join(rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ProfileConfig:
    return ProfileConfig(
        models=("replica:tiny",),
        steps=(2,),
        prompts=_prompts(tmp_path_factory.mktemp("prompts")),
        category_mapping="challenge",
        resolution=64,
        device="cpu",
        clip_backbone="replica:tiny",
        clip_pretrained=None,
        flush_every=2,
        warmup=0,
    )


@pytest.fixture(scope="module")
def finished(config: ProfileConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert profile(config, run_dir).recorded == N_IMAGES
    return run_dir


@pytest.fixture(scope="module")
def other_settings(config: ProfileConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("other") / "run"
    profile(dataclasses.replace(config, guidance_scale=3.0), run_dir)
    return run_dir


@pytest.fixture
def run_dir(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _shards(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "records").glob("shard-*.parquet"))


def _one_row_per_key(run_dir: Path) -> None:
    own = read_records(run_dir, own=read_manifest(run_dir))
    assert len(own) == N_IMAGES and not own.duplicated(KEY).any() and own["status"].eq("ok").all()


def test_a_foreign_shard_is_never_counted_as_measured(
    run_dir: Path, other_settings: Path, config: ProfileConfig
) -> None:
    lost = _shards(run_dir)[0]
    lost.unlink()  # a kill lost two images ...
    shutil.copy(_shards(other_settings)[0], run_dir / "records" / "shard-0-00099.parquet")  # ... a shard strayed in
    audit = audit_run(run_dir, read_manifest(run_dir))
    assert (audit.own, audit.foreign, audit.duplicates) == (N_IMAGES - 2, 2, 0)
    assert "2 foreign row(s)" in audit.problems()[0]

    result = profile(config, run_dir)
    assert (result.recorded, result.skipped, result.foreign) == (2, N_IMAGES - 2, 2)
    _one_row_per_key(run_dir)
    assert summarize_run(run_dir).audit.foreign == 2
    with pytest.raises(TableError, match=r"records: 2 foreign row\(s\)"):
        read_runs([run_dir])  # calibrate never mixes them into a table


def test_a_duplicated_shard_is_reported_with_its_count(run_dir: Path, config: ProfileConfig) -> None:
    shutil.copy(_shards(run_dir)[0], run_dir / "records" / "shard-0-00077.parquet")
    audit = summarize_run(run_dir).audit
    assert (audit.own, audit.duplicates, audit.foreign) == (N_IMAGES + 2, 2, 0)
    assert audit.problems() == ["2 duplicate row(s): images recorded more than once"]
    assert profile(config, run_dir).recorded == 0
    with pytest.raises(TableError, match=r"2 duplicate row\(s\)"):
        read_runs([run_dir])


def test_a_corrupt_shard_is_named_then_quarantined_and_its_images_measured_again(
    run_dir: Path, config: ProfileConfig
) -> None:
    bad = _shards(run_dir)[1]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated, as by a full disk
    with pytest.raises(ArtifactError, match=rf"{bad.name}.*--quarantine-corrupt"):
        profile(config, run_dir)
    assert list(summarize_run(run_dir).audit.corrupt) == [bad]

    result = profile(config, run_dir, quarantine_corrupt=True)
    assert result.recorded == 2 and result.quarantined == (run_dir / "quarantine" / bad.name,)
    assert (run_dir / "quarantine" / bad.name).is_file() and not bad.exists()
    _one_row_per_key(run_dir)


def test_a_lost_manifest_is_rebuilt_only_from_matching_settings(run_dir: Path, config: ProfileConfig) -> None:
    run_id = read_manifest(run_dir)["run_id"]
    (run_dir / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"missing, and the 8 rows .* other settings"):
        profile(dataclasses.replace(config, guidance_scale=3.0), run_dir)
    assert not (run_dir / "manifest.json").exists()

    result = profile(config, run_dir)
    assert (result.recorded, result.skipped, result.run_id) == (0, N_IMAGES, run_id)
    assert read_manifest(run_dir)["run_id"] == run_id


def test_other_settings_on_a_run_are_refused_naming_what_differs(run_dir: Path, config: ProfileConfig) -> None:
    with pytest.raises(ValueError, match=r"field 'settings_sha256': .* \(steps differ\); .* another --out"):
        profile(dataclasses.replace(config, steps=(3,)), run_dir)
    assert len(read_records(run_dir)) == N_IMAGES


def test_a_renamed_run_folder_resumes(run_dir: Path, config: ProfileConfig) -> None:
    _shards(run_dir)[-1].unlink()
    moved = run_dir.parent / "moved" / "elsewhere"
    moved.parent.mkdir()
    run_dir.rename(moved)
    result = profile(config, moved)
    assert (result.recorded, result.skipped) == (2, N_IMAGES - 2)
    _one_row_per_key(moved)


def test_a_second_process_on_the_same_rank_is_refused(run_dir: Path, config: ProfileConfig) -> None:
    with open(lock_path(run_dir, 0), "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match=r"another genedge profile process .* rank 0; wait for it"):
            profile(config, run_dir)


def _cli(config: ProfileConfig, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "genedge",
        "profile",
        "--model",
        config.models[0],
        "--steps",
        "2",
        "--prompts",
        config.prompts,
        "--category-mapping",
        config.category_mapping,
        "--resolution",
        "64",
        "--device",
        "cpu",
        "--clip-backbone",
        "replica:tiny",
        "--clip-pretrained",
        "none",
        "--flush-every",
        "2",
        "--warmup",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]


def test_two_concurrent_profiles_then_a_resume_give_one_row_per_key(config: ProfileConfig, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = genedge_env()
    processes = [
        subprocess.Popen(_cli(config, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=TIMEOUT_S) for p in processes]  # reads the pipes while waiting
    outcomes = [(p.returncode, stdout, stderr) for p, (stdout, stderr) in zip(processes, outputs)]
    assert any(code == 0 for code, _, _ in outcomes), outcomes
    for code, _, stderr in outcomes:
        assert code == 0 or (code == 2 and "another genedge profile process" in stderr), stderr
    resumed = subprocess.run(_cli(config, out), env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert f"skipped {N_IMAGES} already recorded" in resumed.stdout
    _one_row_per_key(out)
    assert audit_run(out, read_manifest(out)).problems() == []


def test_a_shard_missing_a_column_is_named_by_show_resume_and_calibrate(
    run_dir: Path, config: ProfileConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = _shards(run_dir)[1]
    pd.read_parquet(shard).drop(columns=["total_s"]).to_parquet(shard)  # as a hand edit with pandas writes it
    shown = genedge_in_process(capsys, "profile", "show", run_dir)
    assert shown.returncode == 0
    assert f"problem: {shard}: total_s: missing record column" in shown.stdout
    with pytest.raises(ArtifactError, match=rf"{shard.name}: total_s: missing record column .*--quarantine-corrupt"):
        profile(config, run_dir)
    calibrated = genedge_in_process(capsys, "calibrate", run_dir, "--out", run_dir.parent / "table.json")
    assert calibrated.returncode == 2 and f"{shard}: total_s: missing record column" in calibrated.stderr


def test_a_string_steps_column_is_refused_by_calibrate_naming_it(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = _shards(run_dir)[0]
    pd.read_parquet(shard).astype({"steps": str}).to_parquet(shard)
    calibrated = genedge_in_process(capsys, "calibrate", run_dir, "--out", run_dir.parent / "table.json")
    assert calibrated.returncode == 2
    assert f"{shard}: steps: expected int32 values, but the column holds" in calibrated.stderr
    assert "Traceback" not in calibrated.stderr


def test_a_hand_edited_manifest_is_refused_by_show_resume_and_calibrate(
    run_dir: Path, config: ProfileConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["guidance_scale"] = 3.0  # the rows were measured at 7.5
    path.write_text(json.dumps(manifest))
    expected = f"{path}: settings_sha256: .* is not the hash of the manifest's settings"
    for command in (("profile", "show", run_dir), ("calibrate", run_dir, "--out", run_dir.parent / "t.json")):
        result = genedge_in_process(capsys, *command)
        assert result.returncode == 2 and re.search(expected, result.stderr), result.stderr
    with pytest.raises(ArtifactError, match=expected):
        profile(config, run_dir)


def test_a_manifest_whose_run_id_names_none_of_its_rows_is_not_resumed(run_dir: Path, config: ProfileConfig) -> None:
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    run_id, manifest["run_id"] = manifest["run_id"], "20260101T000000Z-000000"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"field 'run_id': .* names none of the rows .* \(runs {run_id} \(8 rows\)\)"):
        profile(config, run_dir)
    assert len(read_records(run_dir)) == N_IMAGES  # nothing measured again beside them
    assert audit_run(run_dir, read_manifest(run_dir)).foreign == N_IMAGES  # what `show` lists as foreign
    with pytest.raises(TableError, match=rf"records: {N_IMAGES} foreign row\(s\)"):
        read_runs([run_dir])


def test_a_kill_inside_a_shard_write_leaves_nothing_a_resume_does_not_clean(
    config: ProfileConfig, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # Publish call 1 is the manifest's rename; 2, 3, ... link the shards, each written whole beside its name
    # first. Killed before the second shard's link, that shard is a temporary file only.
    killed = run_killed(3, "before", _cli(config, out)[3:])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list((out / "records").glob(".*.tmp"))) == 1
    assert len(read_records(out)) == 2
    resumed = subprocess.run(_cli(config, out), env=genedge_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.rglob("*.tmp"))
    _one_row_per_key(out)
    assert audit_run(out, read_manifest(out)).problems() == []
