"""Derive genedge's shipped reference calibration table from public measurements.

Reads the public data sets (not shipped with genedge) and writes
``data/tables/reference-a100.json``: SD 1.5, SD 2.1 and SDXL on an NVIDIA
A100-SXM4-40GB, quality for the paper's four PartiPrompts categories in one
CLIPScore convention (OpenAI CLIP ViT-B/32, 100·cos, as published by TIFA), latency
and energy per image versus steps, and peak memory.
Every number is tagged ``published`` (measured by others, cited) or
``derived`` (by a rule written into the table's ``sources``).

Usage:
    python scripts/build_reference_table.py [--data ../shared/data] [--out data/tables/reference-a100.json]

Running it again on the same inputs gives a byte-identical file.

The quality convention, categories, step grid and quality cells are defined here once;
``scripts/build_edge_tables.py`` imports them for the edge-device tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from genedge.calibrate.fit import fit_quality
from genedge.contract.table import (
    CalibrationTable,
    ClipConvention,
    EnergyModel,
    LatencyModel,
    MemoryPeak,
    ModelCalibration,
    QualityCell,
    QualityCurve,
    cell_standard_errors,
)
from genedge.contract.table_file import save_table, table_manifest_from_dict

CATEGORIES = ("Basic", "Detail", "Imagination", "Complex")
CHALLENGE_TO_CATEGORY = {
    "Basic": "Basic",
    "Simple Detail": "Detail",
    "Fine-grained Detail": "Detail",
    "Imagination": "Imagination",
    "Complex": "Complex",
}
CATEGORY_MAPPING = {
    "name": "paper4",
    "column": "Challenge",
    "labels": {c: sorted(k for k, v in CHALLENGE_TO_CATEGORY.items() if v == c) for c in CATEGORIES},
}
#: The CLIPScore convention of every quality number in the shipped tables (TIFA's published scores).
CLIP_CONVENTION = ClipConvention(
    backbone="ViT-B-32",
    pretrained="openai",
    formula="100*cos (TIFA; all >0)",
    truncation="77 tokens (CLIP tokenizer)",
    preprocess="CLIP 224px resize + center crop (TIFA's CLIPScore)",
)
STEP_GRID = (10, 15, 20, 25, 30, 40, 50)
# TIFA does not record the steps; its images came from the diffusers pipelines' default.
REFERENCE_STEPS = 50
# Quality-versus-steps shape: mean(s) ∝ 1 − A·exp(−s/κ); κ fixed, A fitted to one ratio (see the rule).
KAPPA_STEPS = 10.0
# Total parameters (billions), ML.ENERGY models.json, for the memory rule.
TOTAL_PARAMS_B = {"sd15": 1.1, "sd21": 1.3, "sdxl": 3.5}
SD15_PEAK_BYTES = 4_400 * 10**6  # ONNX Runtime README, A100-SXM4-40GB, torch 2.0, bs1, second_run_memory_MB
A100_40GB_BYTES = 40 * 2**30
ML_ENERGY_SD15_25STEP_S = 0.921  # Openjourney-v4 (SD 1.5 architecture), A100-40GB, bs1, 25 steps
ML_ENERGY_SD15_25STEP_J = 227.0  # the same run's energy per image (J)
ML_ENERGY_STEPS = (30, 40, 50)
TIFA_MODELS = {"sd15": "stable_diffusion_v1_5", "sd21": "stable_diffusion_v2_1"}

SOURCES = {
    "tifa": {
        "kind": "published",
        "citation": "Hu et al., TIFA (ICCV 2023), github.com/Yushi-Hu/tifa @ 8e37050f, "
        "human_annotations/human_annotations_with_scores.json, field clipscore_vitb32 "
        "(OpenAI CLIP ViT-B/32, 100*cos), the 51 PartiPrompts prompts of TIFA v1.0 mapped to "
        "PartiPrompts Challenge by exact prompt text; one image per prompt. Steps are not "
        "recorded; taken as 50, the diffusers default of the time.",
    },
    "mlenergy-v2-a100": {
        "kind": "published",
        "citation": "ML.ENERGY Leaderboard v2 (Chung et al., arXiv:2505.06371), github.com/ml-energy/leaderboard "
        "@ 2819ae10, data/diffusion/text-to-image/A100-SXM4-40GB/{30,40,50}/stabilityai/<model>/bs1.json: "
        "mean batch latency ('Batch latency (s)') and GPU energy per image ('Energy per image (J)', Zeus "
        "windows) at batch size 1, fp16, default resolution; least-squares line over steps for each.",
    },
    "rule-sd15-latency": {
        "kind": "derived",
        "rule": "SD 1.5 latency = the SD 2.1 line scaled so that 25 steps take "
        f"{ML_ENERGY_SD15_25STEP_S:g} s, the ML.ENERGY v2 A100-40GB bs1 25-step latency of Openjourney-v4 "
        "(SD 1.5 architecture, 512^2) measured by the same harness as the SD 2.1 line. Its coefficients' "
        "standard errors are the SD 2.1 line's, scaled the same way.",
    },
    "rule-sd15-energy": {
        "kind": "derived",
        "rule": "SD 1.5 energy = the SD 2.1 energy line scaled so that 25 steps cost "
        f"{ML_ENERGY_SD15_25STEP_J:g} J, the ML.ENERGY v2 A100-40GB bs1 25-step energy per image of "
        "Openjourney-v4 (SD 1.5 architecture, 512^2), the run whose latency scales the SD 1.5 latency line "
        "(ml-energy/leaderboard-v2 @ c3af7f31, data/diffusion/text-to-image/A100-SXM4-40GB/<model>/bs1+steps25.json). "
        "The overhead/per-step split is SD 2.1's; the total at 25 steps is the published one.",
    },
    "ort-sd15-memory": {
        "kind": "published",
        "citation": "microsoft/onnxruntime @ b1954fab, onnxruntime/python/tools/transformers/models/"
        "stable_diffusion/README.md: SD 1.5, A100-SXM4-40GB, torch 2.0, batch 1, "
        "second_run_memory_MB = 4,400 MB (peak of the process on the GPU).",
    },
    "rule-memory-by-params": {
        "kind": "derived",
        "rule": "Peak memory = SD 1.5's published 4.4 GB peak scaled by total parameter count "
        "(ML.ENERGY models.json: SD 1.5 architecture 1.1 B, SD 2.1 1.3 B, SDXL 3.5 B). "
        "For SDXL this gives 14.0 GB, consistent with the ~13 GB minimum NVIDIA's Jetson AI Lab states.",
    },
    "rule-basic-from-sd3-ratio": {
        "kind": "derived",
        "rule": "TIFA has no PartiPrompts 'Basic' prompt. Basic mean and std = the model's mean and std over its "
        "TIFA PartiPrompts prompts of the other three categories, times the ratio of SD3-Medium's Basic "
        "mean (std) to its mean (std) over those three categories on the DiTServing 50-step per-prompt "
        "CLIPScores (github.com/kurchi1205/DiTServing @ 5d0d7ffa, clip_scores_by_prompt_diffusers.json). "
        "Only the dimensionless ratio crosses from that ViT-B/16 data; the numbers stay ViT-B/32. Width: "
        "the relative standard errors of the model's mean (std) over those prompts and of the two SD3 means "
        "(stds) of the ratio, combined in quadrature (delta method); the error of carrying the ratio across "
        "models is not in it.",
    },
    "rule-sdxl-quality": {
        "kind": "derived",
        "rule": "No per-prompt ViT-B/32 CLIPScores of SDXL exist publicly. SDXL = SD 2.1 per category plus the "
        "SD 2.1 - SD 1.5 difference of means over all TIFA PartiPrompts prompts (one model generation "
        "of improvement); std = SD 2.1's. A prior, not a measurement: profile SDXL to replace it. Width: the "
        "SD 2.1 cell's standard error, the difference's (paired over the prompts) and a prior standard "
        "deviation as large as the difference itself, in quadrature; std_se = SD 2.1's.",
    },
    "rule-quality-vs-steps": {
        "kind": "derived",
        "rule": "mean(s) = a - b*exp(-s/10) with b = A*a, scaled so that mean(50) is the 50-step cell; A is set "
        "so that mean(28)/mean(50) equals the ratio of the DiTServing SD3-Medium runs' overall means "
        "(clip_scores_by_prompt.json, taken as its scripts' 28-step default, over "
        "clip_scores_by_prompt_diffusers.json, 50 steps). std is held at the 50-step value. b_se: the "
        "ratio's standard error (paired over the 220 prompts) carried to b, and a prior standard deviation of "
        "half of b for carrying SD3-Medium's shape to another model, in quadrature.",
    },
}

#: The ``sources`` entries the quality cells and curves of SD 1.5 and SD 2.1 cite.
QUALITY_SOURCES = ("tifa", "rule-basic-from-sd3-ratio", "rule-quality-vs-steps")
ROOT = Path(__file__).resolve().parents[1]
#: Where the public data sets live in a checkout next to ``shared/`` (not shipped with genedge).
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _tifa_scores(data: Path) -> dict[str, dict[str, list[float]]]:
    """model → category → per-prompt ViT-B/32 CLIPScores on TIFA's PartiPrompts prompts."""
    records = json.loads((data / "tifa-human-clip" / "human_annotations_with_scores.json").read_text())
    challenge = {
        row["text_id"]: row["Challenge"] for row in _read_tsv(data / "tifa-human-clip" / "DERIVED_partiprompt_map.tsv")
    }
    scores: dict[str, dict[str, list[float]]] = {key: {c: [] for c in CATEGORIES} for key in TIFA_MODELS}
    for key, tifa_name in TIFA_MODELS.items():
        for text_id, label in sorted(challenge.items()):
            category = CHALLENGE_TO_CATEGORY.get(label)
            if category is not None:
                scores[key][category].append(records[f"{text_id}_{tifa_name}"]["clipscore_vitb32"])
    return scores


def _sd3_scores(data: Path, name: str) -> dict[str, list[float]]:
    """category → SD3-Medium per-prompt ViT-B/16 CLIPScores from one DiTServing file."""
    folder = data / "ditserving-sd3-parti"
    values = json.loads((folder / name).read_text())
    out: dict[str, list[float]] = {c: [] for c in CATEGORIES}
    for row in _read_tsv(folder / "DERIVED_p2_key_map.tsv"):
        category = CHALLENGE_TO_CATEGORY.get(row["Challenge"])
        if category is not None:
            out[category].append(values[row["key"]])
    return out


def _mlenergy_fit(data: Path, model: str, field: str) -> stats._stats_py.LinregressResult:
    """Least-squares line of one ML.ENERGY v2 field over :data:`ML_ENERGY_STEPS`."""
    steps, values = [], []
    for s in ML_ENERGY_STEPS:
        doc = json.loads((data / "mlenergy-v2-t2i-a100" / str(s) / "stabilityai" / model / "bs1.json").read_text())
        steps.append(doc["Number of inference steps"])
        values.append(doc[field])
    return stats.linregress(steps, values)


def _mlenergy_line(data: Path, model: str) -> LatencyModel:
    fit = _mlenergy_fit(data, model, "Batch latency (s)")
    return LatencyModel(
        overhead_s=float(fit.intercept),
        per_step_s=float(fit.slope),
        n=len(ML_ENERGY_STEPS),
        r2=float(fit.rvalue**2),
        source="published",
        ref="mlenergy-v2-a100",
        overhead_se_s=float(fit.intercept_stderr),
        per_step_se_s=float(fit.stderr),
    )


def _mlenergy_energy(data: Path, model: str) -> EnergyModel:
    fit = _mlenergy_fit(data, model, "Energy per image (J)")
    return EnergyModel(
        overhead_j=float(fit.intercept),
        per_step_j=float(fit.slope),
        n=len(ML_ENERGY_STEPS),
        r2=float(fit.rvalue**2),
        source="published",
        ref="mlenergy-v2-a100",
        overhead_se_j=float(fit.intercept_stderr),
        per_step_se_j=float(fit.stderr),
    )


def _cell(values: list[float]) -> QualityCell:
    return fit_quality(values).cell("published", "tifa")


def _relative_se(values: np.ndarray) -> tuple[float, float]:
    """Relative standard errors of the mean and of the spread of ``values`` (one sample of prompts)."""
    mean_se, std_se = cell_standard_errors(float(values.std()), values.size)
    return mean_se / float(values.mean()), std_se / float(values.std())


def _amplitude(ratio_28: float) -> float:
    """The A of ``rule-quality-vs-steps`` that makes mean(28)/mean(50) equal ``ratio_28``."""
    e28, e50 = math.exp(-28 / KAPPA_STEPS), math.exp(-REFERENCE_STEPS / KAPPA_STEPS)
    return (1 - ratio_28) / (e28 - ratio_28 * e50)


def _curve(cell: QualityCell, amplitude: float, amplitude_se: float) -> QualityCurve:
    a = cell.mean / (1 - amplitude * math.exp(-REFERENCE_STEPS / KAPPA_STEPS))
    b = amplitude * a
    return QualityCurve(
        form="saturating_exp",
        valid_steps=(STEP_GRID[0], STEP_GRID[-1]),
        source="derived",
        ref="rule-quality-vs-steps",
        a=a,
        b=b,
        kappa=KAPPA_STEPS,
        std=cell.std,
        b_se=math.hypot(amplitude_se * a, 0.5 * b),
    )


def reference_quality(data: Path) -> tuple[dict[str, dict[str, QualityCell]], tuple[float, float]]:
    """The reference-steps quality cells of SD 1.5, SD 2.1 and SDXL, and the curves' amplitude A.

    Returns ``(cells, (amplitude, amplitude_se))``: model key → category → the cell at
    :data:`REFERENCE_STEPS`, and the A of ``rule-quality-vs-steps`` (with its standard error) that
    :func:`quality_and_curves` turns into curves.
    """
    tifa = _tifa_scores(data)
    sd3 = _sd3_scores(data, "clip_scores_by_prompt_diffusers.json")
    sd3_28 = _sd3_scores(data, "clip_scores_by_prompt.json")
    measured = [c for c in CATEGORIES if c != "Basic"]

    basic = np.asarray(sd3["Basic"], dtype=float)
    sd3_rest = np.concatenate([sd3[c] for c in measured])
    basic_mean_ratio = float(basic.mean() / sd3_rest.mean())
    basic_std_ratio = float(basic.std() / sd3_rest.std())
    ratio_errors = [_relative_se(basic), _relative_se(sd3_rest)]
    all_28 = np.concatenate([sd3_28[c] for c in CATEGORIES])
    all_50 = np.concatenate([sd3[c] for c in CATEGORIES])
    ratio_28 = float(all_28.mean() / all_50.mean())
    # The same prompts at 28 and 50 steps: the ratio's error is that of the paired residuals x28 − r·x50.
    ratio_28_se = float((all_28 - ratio_28 * all_50).std(ddof=1) / math.sqrt(all_50.size) / all_50.mean())
    amplitude = _amplitude(ratio_28)
    amplitude_se = abs(_amplitude(ratio_28 + ratio_28_se) - _amplitude(ratio_28 - ratio_28_se)) / 2

    quality: dict[str, dict[str, QualityCell]] = {}
    for key in TIFA_MODELS:
        cells = {c: _cell(tifa[key][c]) for c in measured}
        rest = np.concatenate([tifa[key][c] for c in measured])
        mean_rel, std_rel = zip(_relative_se(rest), *ratio_errors)
        mean, std = float(rest.mean() * basic_mean_ratio), float(rest.std() * basic_std_ratio)
        cells["Basic"] = QualityCell(
            mean=mean,
            std=std,
            n=0,
            gof=None,
            source="derived",
            ref="rule-basic-from-sd3-ratio",
            mean_se=mean * math.hypot(*mean_rel),
            std_se=std * math.hypot(*std_rel),
        )
        quality[key] = cells
    all_sd15 = np.concatenate([tifa["sd15"][c] for c in measured])
    all_sd21 = np.concatenate([tifa["sd21"][c] for c in measured])
    generation_gain = float(all_sd21.mean() - all_sd15.mean())
    gain_se = float((all_sd21 - all_sd15).std(ddof=1) / math.sqrt(all_sd21.size))
    quality["sdxl"] = {
        c: QualityCell(
            mean=cell.mean + generation_gain,
            std=cell.std,
            n=0,
            gof=None,
            source="derived",
            ref="rule-sdxl-quality",
            mean_se=math.hypot(cell.mean_se, gain_se, generation_gain),
            std_se=cell.std_se,
        )
        for c, cell in quality["sd21"].items()
    }
    return quality, (amplitude, amplitude_se)


def quality_and_curves(
    cells: dict[str, QualityCell], amplitude: tuple[float, float]
) -> tuple[dict[str, dict[int, QualityCell]], dict[str, QualityCurve]]:
    """One model's ``quality`` (its cells at :data:`REFERENCE_STEPS`) and ``curves`` over :data:`STEP_GRID`.

    ``amplitude`` is the ``(A, standard error of A)`` of :func:`reference_quality`.
    """
    return (
        {c: {REFERENCE_STEPS: cells[c]} for c in CATEGORIES},
        {c: _curve(cells[c], *amplitude) for c in CATEGORIES},
    )


def build(data: Path) -> CalibrationTable:
    """Assemble the reference table from the public data under ``data``."""
    quality, amplitude = reference_quality(data)

    sd21_line = _mlenergy_line(data, "stable-diffusion-2-1")
    scale = ML_ENERGY_SD15_25STEP_S / sd21_line.seconds(25)
    latency = {
        "sd15": LatencyModel(
            overhead_s=sd21_line.overhead_s * scale,
            per_step_s=sd21_line.per_step_s * scale,
            n=0,
            r2=None,
            source="derived",
            ref="rule-sd15-latency",
            overhead_se_s=sd21_line.overhead_se_s * scale,
            per_step_se_s=sd21_line.per_step_se_s * scale,
        ),
        "sd21": sd21_line,
        "sdxl": _mlenergy_line(data, "stable-diffusion-xl-base-1.0"),
    }
    sd21_energy = _mlenergy_energy(data, "stable-diffusion-2-1")
    energy_scale = ML_ENERGY_SD15_25STEP_J / sd21_energy.joules(25)
    energy = {
        "sd15": EnergyModel(
            overhead_j=sd21_energy.overhead_j * energy_scale,
            per_step_j=sd21_energy.per_step_j * energy_scale,
            n=0,
            r2=None,
            source="derived",
            ref="rule-sd15-energy",
        ),
        "sd21": sd21_energy,
        "sdxl": _mlenergy_energy(data, "stable-diffusion-xl-base-1.0"),
    }
    memory = {
        key: (
            MemoryPeak(
                peak_bytes=SD15_PEAK_BYTES, kind="process peak on the GPU", source="published", ref="ort-sd15-memory"
            )
            if key == "sd15"
            else MemoryPeak(
                peak_bytes=int(round(SD15_PEAK_BYTES * TOTAL_PARAMS_B[key] / TOTAL_PARAMS_B["sd15"], -6)),
                kind="process peak on the GPU",
                source="derived",
                ref="rule-memory-by-params",
            )
        )
        for key in ("sd15", "sd21", "sdxl")
    }
    names = {
        "sd15": ("Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5)", 512),
        "sd21": ("Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1)", 768),
        "sdxl": ("Stable Diffusion XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0)", 1024),
    }
    models = {}
    for key, (name, resolution) in names.items():
        cells, curves = quality_and_curves(quality[key], amplitude)
        models[key] = ModelCalibration(
            key=key,
            name=name,
            resolution=resolution,
            steps=STEP_GRID,
            default_steps=REFERENCE_STEPS,
            quality=cells,
            curves=curves,
            latency=latency[key],
            memory=memory[key],
            energy=energy[key],
        )
    return CalibrationTable(
        device={
            "name": "NVIDIA A100-SXM4-40GB",
            "memory_bytes": A100_40GB_BYTES,
            "driver": None,
            "cuda": None,
            "dtype": "float16",
            "batch_size": 1,
        },
        clip_convention=CLIP_CONVENTION,
        categories=CATEGORIES,
        category_mapping=CATEGORY_MAPPING,
        models=models,
        sources=SOURCES,
        manifest=table_manifest_from_dict(
            {
                "built_by": "scripts/build_reference_table.py",
                "note": "reference table assembled from "
                "public measurements by others; profile your own GPU and run 'genedge calibrate' to replace it",
            }
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder holding the public data sets (default: ../shared/data)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "data" / "tables" / "reference-a100.json", help="where to write the table"
    )
    args = parser.parse_args()
    path = save_table(build(args.data), args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
