"""genedge.calibrate: the fits that produce calibration tables from profile runs (and update their latency lines
from a served plan's records).

The table document itself (types and maths, validation and I/O) is defined in the contract
(:mod:`genedge.contract.table`, :mod:`genedge.contract.table_file`), since the planner and the server
read it too; its names are re-exported here for convenience.

Names are imported on first use (PEP 562): reading a table needs numpy only, while fitting needs
pandas, pyarrow and scipy.stats, and figures need matplotlib.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".build": ("build_table", "calibrate_runs", "fit_and_write"),
        ".compare": (
            "CoefficientChange",
            "MemoryChange",
            "QualityChange",
            "TableComparison",
            "compare_tables",
            "comparison_text",
            "welch_t",
        ),
        ".figures": ("write_figures",),
        ".fit": ("CurveFit", "LineFit", "QualityFit", "fit_line", "fit_quality", "fit_quality_curve"),
        ".pairing": ("MIN_SHARED_IMAGES", "paired_cells"),
        ".records": ("ProfileRuns", "manifests_as_provenance", "read_runs"),
        ".report": ("REPLICA_NOTE", "table_summary"),
        ".served": (
            "SERVED_SOURCES",
            "ServedCalibration",
            "ServedCell",
            "ServedLine",
            "ServedRecords",
            "calibrate_served",
            "read_served",
            "recalibrate",
            "served_summary",
        ),
        "genedge.contract.table": (
            "HOST_MEMORY_FIELDS",
            "MAX_JOULES",
            "MAX_MEMORY_BYTES",
            "MAX_SECONDS",
            "MAX_WATTS",
            "CalibrationTable",
            "EnergyModel",
            "Exclusion",
            "LatencyModel",
            "MemoryPeak",
            "ModelCalibration",
            "PairedCells",
            "QualityCell",
            "QualityCurve",
            "Source",
            "StageBreakdown",
            "saturating_mean",
        ),
        "genedge.contract.table_file": (
            "SCHEMA_VERSION",
            "TableError",
            "load_table",
            "save_table",
            "table_from_dict",
            "table_to_dict",
        ),
    },
)
