"""Derive genedge's shipped calibration tables for Snapdragon edge devices from public measurements.

Reads Qualcomm AI Hub's published per-component latencies of Stable Diffusion 1.5 and 2.1
(w8a16, on the Hexagon NPU; the ``perf.yaml`` files of the Python package qai-hub-models 0.65.0,
copied into ``../shared/data/qai-hub-sd-edge``) and writes one table per device under
``data/tables/``: a flagship phone (Samsung Galaxy S24), a laptop (Snapdragon X Elite CRD) and an
IoT board (QCS8550 proxy). Latency follows the package pipeline's call pattern (two text-encoder
calls, two UNet calls per denoising step, one VAE decode); quality is the A100 reference table's
(same CLIPScore convention, cells and curves, built by the same functions); memory is derived from
parameter counts. No energy is published for these devices, so the tables carry none. Every
number is tagged ``published`` or ``derived`` with its rule in the table's ``sources``.

Usage:
    python scripts/build_edge_tables.py [--data ../shared/data] [--out-dir data/tables]

Needs PyYAML (``pip install pyyaml``) to read the YAML files; genedge itself does not. Running it
again on the same inputs gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from build_reference_table import (
    CATEGORIES,
    CATEGORY_MAPPING,
    CLIP_CONVENTION,
    DEFAULT_DATA,
    QUALITY_SOURCES,
    ROOT,
    SOURCES,
    STEP_GRID,
    TOTAL_PARAMS_B,
    quality_and_curves,
    reference_quality,
)

from genedge.contract.table import CalibrationTable, LatencyModel, MemoryPeak, ModelCalibration
from genedge.contract.table_file import save_table, table_manifest_from_dict

PACKAGE = "qai-hub-models 0.65.0"
WHEEL = "qai_hub_models-0.65.0-py3-none-any.whl"
NOTICE = "Copyright 2025 Qualcomm Technologies, Inc. and/or its subsidiaries; BSD-3-Clause (the wheel's LICENSE)"
FOLDER = "qai-hub-sd-edge"
PRECISION = "w8a16"
RUNTIME = "qnn_context_binary"
COMPONENTS = ("text_encoder", "unet", "vae")
# The package's diffusion pipeline: classifier-free guidance as two batch-1 calls.
TEXT_ENCODER_CALLS = 2  # per prompt (conditional and unconditional embeddings)
UNET_CALLS_PER_STEP = 2  # per denoising step (conditional and unconditional)
VAE_CALLS = 1  # per image (decode)
PACKAGE_DEFAULT_STEPS = 20  # the package pipeline's default step count (in STEP_GRID)
RESOLUTION = 512  # UNet latent (1, 4, 64, 64) for both models
WEIGHT_BYTES_PER_PARAM = 1  # w8: 8-bit weights
MB = 10**6  # estimated_peak_memory_range_mb, taken as 10^6 bytes


@dataclass(frozen=True)
class EdgeModel:
    """A model of the package: its perf file and what the table calls it."""

    file: str
    package_id: str
    hf_repo: str  # the package's HF_REPO (models/<package_id>/model.py)
    label: str

    @property
    def name(self) -> str:
        return f"{self.label}, {PRECISION} on the NPU (qai-hub-models {self.package_id}; {self.hf_repo})"


@dataclass(frozen=True)
class EdgeDevice:
    """A device of the perf files that genedge ships a table for."""

    name: str  # exactly as the YAML spells it
    form_factor: str


MODELS = {
    "sd15": EdgeModel(
        "stable_diffusion_v1_5.perf.yaml",
        "stable_diffusion_v1_5",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "Stable Diffusion 1.5",
    ),
    "sd21": EdgeModel(
        "stable_diffusion_v2_1.perf.yaml",
        "stable_diffusion_v2_1",
        "stabilityai/stable-diffusion-2-1-base",
        "Stable Diffusion 2.1 base",
    ),
}
#: Shipped table name (file stem under data/tables) → device.
DEVICES = {
    "galaxy-s24": EdgeDevice("Samsung Galaxy S24", "phone"),
    "x-elite-crd": EdgeDevice("Snapdragon X Elite CRD", "laptop (Qualcomm reference design)"),
    "qcs8550-proxy": EdgeDevice("QCS8550 (Proxy)", "IoT board"),
}

LATENCY_RULE = (
    f"overhead_s = ({TEXT_ENCODER_CALLS}*text_encoder + {VAE_CALLS}*vae) ms / 1000 and per_step_s = "
    f"{UNET_CALLS_PER_STEP}*unet ms / 1000, from the per-call figures cited in 'qai-hub-perf': the package's "
    "diffusion pipeline (models/templates/diffusion/) runs classifier-free guidance "
    "as two batch-1 text-encoder calls per prompt and two batch-1 UNet calls per denoising step (conditional and "
    "unconditional), then one VAE decode; default 20 steps, guidance 7.5, 512x512. Not included: tokenization, "
    "the scheduler arithmetic on the host and moving tensors between the three components (not measured). "
    f"Runtime {RUNTIME}: the graph compiled ahead of time into a QNN context binary for the device's NPU, the "
    "form a native app loads directly; the other runtime in the files (precompiled_qnn_onnx) wraps the same "
    "graph in ONNX Runtime's QNN execution provider."
)
MEMORY_RULE = (
    "Peak memory = the pipeline's parameters at 8-bit weights (1 byte per parameter; total parameters from "
    f"ML.ENERGY models.json: SD 1.5 architecture {TOTAL_PARAMS_B['sd15']:g} B, SD 2.1 {TOTAL_PARAMS_B['sd21']:g} B, "
    "the same architecture as 2.1-base; these include the VAE encoder, which the device pipeline does not "
    "load, so they slightly overstate) + the largest of the three components' estimated_peak_memory_range_mb "
    "'max' on this device and runtime (MB taken as 10^6 bytes; the runtime's estimate of one call's execution "
    "memory, standing in for its 16-bit activations; not a resident size; several entries read 0), rounded to "
    "1 MB. It assumes all three components stay loaded and leaves out the app process itself; a floor for "
    "planning, not a measurement."
)
QUALITY_CAVEAT = (
    " On this device: these CLIPScores come from images of the GPU diffusers pipelines TIFA ran (fp16/fp32, "
    "resolution and steps not recorded), not from the w8a16 NPU pipeline whose latency this table holds; its "
    "AIMET quantization (8-bit weights, 16-bit activations) can shift CLIPScore and no correction is applied "
    "(the package's numerics are not in the source files). SD 2.1 here is the 512^2 2.1-base model; the scores "
    "are TIFA's stable_diffusion_v2_1."
)


def _read_perf(path: Path) -> dict[str, dict[str, Mapping[str, Any]]]:
    """device → component → the w8a16 ``qnn_context_binary`` entry of one perf.yaml."""
    try:
        import yaml
    except ImportError as err:
        raise ImportError("reading the perf.yaml files needs PyYAML (`pip install pyyaml`)") from err
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    components = doc["precisions"][PRECISION]["components"]
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for component in COMPONENTS:
        for device, runtimes in components[component]["performance_metrics"].items():
            if RUNTIME in runtimes:
                out.setdefault(device, {})[component] = runtimes[RUNTIME]
    return out


def _figures(perf: Mapping[str, Mapping[str, Mapping[str, Any]]], device: str, file: str) -> dict[str, Mapping]:
    entries = perf.get(device, {})
    missing = [c for c in COMPONENTS if c not in entries]
    if missing:
        raise ValueError(f"{file}: no {PRECISION}/{RUNTIME} figures of {missing} on {device!r}")
    failed = [c for c in COMPONENTS if entries[c]["job_status"] != "Passed"]
    if failed:
        raise ValueError(f"{file}: the {device!r} jobs of {failed} did not pass")
    return {c: entries[c] for c in COMPONENTS}


def _latency(figures: Mapping[str, Mapping[str, Any]]) -> LatencyModel:
    ms = {c: float(figures[c]["inference_time_milliseconds"]) for c in COMPONENTS}
    return LatencyModel(
        overhead_s=(TEXT_ENCODER_CALLS * ms["text_encoder"] + VAE_CALLS * ms["vae"]) / 1000,
        per_step_s=UNET_CALLS_PER_STEP * ms["unet"] / 1000,
        n=0,
        r2=None,
        source="derived",
        ref="rule-edge-latency",
        batch_size=1,
    )


def _memory(key: str, figures: Mapping[str, Mapping[str, Any]]) -> MemoryPeak:
    working = max(figures[c]["estimated_peak_memory_range_mb"]["max"] for c in COMPONENTS) * MB
    weights = TOTAL_PARAMS_B[key] * 10**9 * WEIGHT_BYTES_PER_PARAM
    return MemoryPeak(
        peak_bytes=int(round(weights + working, -6)),
        kind="8-bit weights of all components + largest per-call runtime estimate (NPU)",
        source="derived",
        ref="rule-edge-memory",
    )


def _citation(device: EdgeDevice, figures: Mapping[str, Mapping[str, Mapping[str, Any]]], sha: Mapping) -> str:
    per_model = "; ".join(
        f"{MODELS[key].package_id}: "
        + ", ".join(
            f"{c} {figures[key][c]['inference_time_milliseconds']} ms "
            f"(peak estimate max {figures[key][c]['estimated_peak_memory_range_mb']['max']} MB)"
            for c in COMPONENTS
        )
        for key in MODELS
    )
    files = ", ".join(f"qai_hub_models/models/{m.package_id}/perf.yaml (sha256 {sha[m.file]})" for m in MODELS.values())
    return (
        f"Qualcomm AI Hub Models, Python package {PACKAGE} (wheel {WHEEL}), {files}: precision {PRECISION} "
        f"(AIMET-quantized 8-bit weights, 16-bit activations), device '{device.name}', runtime {RUNTIME}, "
        f"primary compute unit NPU, batch 1, 512x512, inference_time_milliseconds of one call per component, "
        f"measured on the device by Qualcomm AI Hub: {per_model}. Hugging Face checkpoints per the package's "
        f"models/<id>/model.py (HF_REPO; github.com/quic/ai-hub-models @ 04aee51e). {NOTICE}."
    )


def _qairt(figures: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    versions = {entry["tool_versions"]["qairt"] for per_model in figures.values() for entry in per_model.values()}
    return ", ".join(sorted(versions))


def build(data: Path) -> dict[str, CalibrationTable]:
    """Assemble every shipped edge table from the public data under ``data``: table name → table."""
    folder = data / FOLDER
    perf = {key: _read_perf(folder / m.file) for key, m in MODELS.items()}
    sha = {m.file: hashlib.sha256((folder / m.file).read_bytes()).hexdigest() for m in MODELS.values()}
    quality, amplitude = reference_quality(data)
    sources_quality = {ref: dict(SOURCES[ref]) for ref in QUALITY_SOURCES}
    for entry in sources_quality.values():
        entry["citation" if "citation" in entry else "rule"] += QUALITY_CAVEAT

    tables = {}
    for table_name, device in DEVICES.items():
        figures = {key: _figures(perf[key], device.name, m.file) for key, m in MODELS.items()}
        models = {}
        for key, m in MODELS.items():
            cells, curves = quality_and_curves(quality[key], amplitude)
            models[key] = ModelCalibration(
                key=key,
                name=m.name,
                resolution=RESOLUTION,
                steps=STEP_GRID,
                default_steps=PACKAGE_DEFAULT_STEPS,
                quality=cells,
                curves=curves,
                latency=_latency(figures[key]),
                memory=_memory(key, figures[key]),
            )
        tables[table_name] = CalibrationTable(
            device={
                "name": device.name,
                "form_factor": device.form_factor,
                "compute_unit": "NPU",
                "runtime": RUNTIME,
                "qairt": _qairt(figures),
                "dtype": PRECISION,
                "batch_size": 1,
                "memory_bytes": None,
                "memory_source": "none: the source files give no device memory, so no limit is applied by default; "
                "pass --memory-gib with the memory an app may use on your unit",
            },
            clip_convention=CLIP_CONVENTION,
            categories=CATEGORIES,
            category_mapping=CATEGORY_MAPPING,
            models=models,
            sources={
                "qai-hub-perf": {"kind": "published", "citation": _citation(device, figures, sha)},
                "rule-edge-latency": {"kind": "derived", "rule": LATENCY_RULE},
                "rule-edge-memory": {"kind": "derived", "rule": MEMORY_RULE},
                **sources_quality,
            },
            manifest=table_manifest_from_dict(
                {
                    "built_by": "scripts/build_edge_tables.py",
                    "package": PACKAGE,
                    "source_files_sha256": dict(sorted(sha.items())),
                    "note": "reference table assembled from Qualcomm AI Hub's published per-component NPU latencies "
                    "and the A100 reference table's quality (GPU images, not this device's); profile your own "
                    "device and run 'genedge calibrate' to replace it",
                }
            ),
        )
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder holding the public data sets (default: ../shared/data)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=ROOT / "data" / "tables",
        help="folder to write <table name>.json into (default: data/tables)",
    )
    args = parser.parse_args()
    for name, table in build(args.data).items():
        print(f"wrote {save_table(table, args.out_dir / f'{name}.json')}")


if __name__ == "__main__":
    main()
