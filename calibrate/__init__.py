"""genedge.calibrate: calibration tables (schema, validation, I/O) and the fits that produce them.

Names are imported on first use (PEP 562): reading a table needs numpy only, while fitting needs
pandas, pyarrow and scipy.stats, and figures need matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# name → the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("build_table", "calibrate_runs", "fit_and_write"), "build"),
    **dict.fromkeys(
        (
            "LatencyChange",
            "MemoryChange",
            "QualityChange",
            "TableComparison",
            "compare_tables",
            "comparison_text",
            "welch_t",
        ),
        "compare",
    ),
    "write_figures": "figures",
    **dict.fromkeys(("CurveFit", "LatencyFit", "QualityFit", "fit_latency", "fit_quality", "fit_quality_curve"), "fit"),
    **dict.fromkeys(("ProfileRuns", "read_runs", "manifests_as_provenance"), "records"),
    **dict.fromkeys(("REPLICA_NOTE", "table_summary"), "report"),
    **dict.fromkeys(
        ("SYNTHETIC_CLIP_CONVENTION", "QualityTruth", "SyntheticModel", "synthetic_run", "write_run"), "synthetic"
    ),
    **dict.fromkeys(
        (
            "SCHEMA_VERSION",
            "CalibrationTable",
            "Exclusion",
            "LatencyModel",
            "MemoryPeak",
            "ModelCalibration",
            "QualityCell",
            "QualityCurve",
            "Source",
            "StageBreakdown",
            "TableError",
            "load_table",
            "save_table",
            "table_from_dict",
            "table_to_dict",
            "saturating_mean",
        ),
        "table",
    ),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
