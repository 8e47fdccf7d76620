"""genedge.calibrate: calibration tables (schema, validation, I/O) and the fits that produce them.

Names are imported on first use (PEP 562): reading a table needs numpy only, while fitting needs
pandas, pyarrow and scipy.stats, and figures need matplotlib.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".build": ("build_table", "calibrate_runs", "fit_and_write"),
        ".compare": (
            "LatencyChange",
            "MemoryChange",
            "QualityChange",
            "TableComparison",
            "compare_tables",
            "comparison_text",
            "welch_t",
        ),
        ".figures": ("write_figures",),
        ".fit": ("CurveFit", "LatencyFit", "QualityFit", "fit_latency", "fit_quality", "fit_quality_curve"),
        ".records": ("ProfileRuns", "manifests_as_provenance", "read_runs"),
        ".report": ("REPLICA_NOTE", "table_summary"),
        ".synthetic": ("SYNTHETIC_CLIP_CONVENTION", "QualityTruth", "SyntheticModel", "synthetic_run", "write_run"),
        ".table": (
            "MAX_MEMORY_BYTES",
            "MAX_SECONDS",
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
            "saturating_mean",
            "table_from_dict",
            "table_to_dict",
        ),
    },
)
