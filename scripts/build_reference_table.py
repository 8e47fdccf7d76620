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

from genedge.calibrate.table import (
    CalibrationTable,
    ClipConvention,
    EnergyModel,
    LatencyModel,
    MemoryPeak,
    ModelCalibration,
    QualityCell,
    QualityCurve,
    save_table,
)

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
        "(SD 1.5 architecture, 512^2) measured by the same harness as the SD 2.1 line.",
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
        "Only the dimensionless ratio crosses from that ViT-B/16 data; the numbers stay ViT-B/32.",
    },
    "rule-sdxl-quality": {
        "kind": "derived",
        "rule": "No per-prompt ViT-B/32 CLIPScores of SDXL exist publicly. SDXL = SD 2.1 per category plus the "
        "SD 2.1 - SD 1.5 difference of means over all TIFA PartiPrompts prompts (one model generation "
        "of improvement); std = SD 2.1's. A prior, not a measurement: profile SDXL to replace it.",
    },
    "rule-quality-vs-steps": {
        "kind": "derived",
        "rule": "mean(s) = a - b*exp(-s/10) with b = A*a, scaled so that mean(50) is the 50-step cell; A is set "
        "so that mean(28)/mean(50) equals the ratio of the DiTServing SD3-Medium runs' overall means "
        "(clip_scores_by_prompt.json, taken as its scripts' 28-step default, over "
        "clip_scores_by_prompt_diffusers.json, 50 steps). std is held at the 50-step value.",
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


def _mlenergy_fit(data: Path, model: str, field: str) -> tuple[float, float, int, float]:
    """Least-squares line of one ML.ENERGY v2 field over steps: (intercept, slope, n, r²)."""
    steps, values = [], []
    for s in ML_ENERGY_STEPS:
        doc = json.loads((data / "mlenergy-v2-t2i-a100" / str(s) / "stabilityai" / model / "bs1.json").read_text())
        steps.append(doc["Number of inference steps"])
        values.append(doc[field])
    fit = stats.linregress(steps, values)
    return float(fit.intercept), float(fit.slope), len(steps), float(fit.rvalue**2)


def _mlenergy_line(data: Path, model: str) -> LatencyModel:
    overhead, per_step, n, r2 = _mlenergy_fit(data, model, "Batch latency (s)")
    return LatencyModel(
        overhead_s=overhead, per_step_s=per_step, n=n, r2=r2, source="published", ref="mlenergy-v2-a100"
    )


def _mlenergy_energy(data: Path, model: str) -> EnergyModel:
    overhead, per_step, n, r2 = _mlenergy_fit(data, model, "Energy per image (J)")
    return EnergyModel(overhead_j=overhead, per_step_j=per_step, n=n, r2=r2, source="published", ref="mlenergy-v2-a100")


def _cell(values: list[float]) -> QualityCell:
    arr = np.asarray(values, dtype=float)
    gof = float(stats.shapiro(arr).pvalue) if arr.size >= 3 else None
    return QualityCell(
        mean=float(arr.mean()), std=float(arr.std(ddof=1)), n=int(arr.size), gof=gof, source="published", ref="tifa"
    )


def _curve(cell: QualityCell, amplitude: float) -> QualityCurve:
    a = cell.mean / (1 - amplitude * math.exp(-REFERENCE_STEPS / KAPPA_STEPS))
    return QualityCurve(
        form="saturating_exp",
        valid_steps=(STEP_GRID[0], STEP_GRID[-1]),
        source="derived",
        ref="rule-quality-vs-steps",
        a=a,
        b=amplitude * a,
        kappa=KAPPA_STEPS,
        std=cell.std,
    )


def reference_quality(data: Path) -> tuple[dict[str, dict[str, QualityCell]], float]:
    """The reference-steps quality cells of SD 1.5, SD 2.1 and SDXL, and the curves' amplitude A.

    Returns ``(cells, amplitude)``: model key → category → the cell at :data:`REFERENCE_STEPS`, and
    the A of ``rule-quality-vs-steps`` that :func:`quality_and_curves` turns into curves.
    """
    tifa = _tifa_scores(data)
    sd3 = _sd3_scores(data, "clip_scores_by_prompt_diffusers.json")
    sd3_28 = _sd3_scores(data, "clip_scores_by_prompt.json")
    measured = [c for c in CATEGORIES if c != "Basic"]

    sd3_rest = np.concatenate([sd3[c] for c in measured])
    basic_mean_ratio = float(np.mean(sd3["Basic"]) / sd3_rest.mean())
    basic_std_ratio = float(np.std(sd3["Basic"], ddof=1) / sd3_rest.std(ddof=1))
    ratio_28 = float(np.mean(np.concatenate(list(sd3_28.values()))) / np.mean(np.concatenate(list(sd3.values()))))
    # Solve (1 − A e^{−28/κ}) / (1 − A e^{−50/κ}) = ratio_28 for A.
    e28, e50 = math.exp(-28 / KAPPA_STEPS), math.exp(-REFERENCE_STEPS / KAPPA_STEPS)
    amplitude = (1 - ratio_28) / (e28 - ratio_28 * e50)

    quality: dict[str, dict[str, QualityCell]] = {}
    for key in TIFA_MODELS:
        cells = {c: _cell(tifa[key][c]) for c in measured}
        rest = np.concatenate([tifa[key][c] for c in measured])
        cells["Basic"] = QualityCell(
            mean=float(rest.mean() * basic_mean_ratio),
            std=float(rest.std(ddof=1) * basic_std_ratio),
            n=0,
            gof=None,
            source="derived",
            ref="rule-basic-from-sd3-ratio",
        )
        quality[key] = cells
    all_sd15 = np.concatenate([tifa["sd15"][c] for c in measured])
    all_sd21 = np.concatenate([tifa["sd21"][c] for c in measured])
    generation_gain = float(all_sd21.mean() - all_sd15.mean())
    quality["sdxl"] = {
        c: QualityCell(
            mean=cell.mean + generation_gain, std=cell.std, n=0, gof=None, source="derived", ref="rule-sdxl-quality"
        )
        for c, cell in quality["sd21"].items()
    }
    return quality, amplitude


def quality_and_curves(
    cells: dict[str, QualityCell], amplitude: float
) -> tuple[dict[str, dict[int, QualityCell]], dict[str, QualityCurve]]:
    """One model's ``quality`` (its cells at :data:`REFERENCE_STEPS`) and ``curves`` over :data:`STEP_GRID`."""
    return (
        {c: {REFERENCE_STEPS: cells[c]} for c in CATEGORIES},
        {c: _curve(cells[c], amplitude) for c in CATEGORIES},
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
        manifest={
            "built_by": "scripts/build_reference_table.py",
            "note": "reference table assembled from "
            "public measurements by others; profile your own GPU and run 'genedge calibrate' to replace it",
        },
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
