"""genedge.calibrate: calibration tables (schema, validation, I/O) and the fits that produce them."""

from genedge.calibrate.table import (
    SCHEMA_VERSION,
    CalibrationTable,
    ClipConvention,
    LatencyModel,
    MemoryPeak,
    ModelCalibration,
    QualityCell,
    QualityCurve,
    Source,
    TableError,
    load_table,
    save_table,
    table_from_dict,
    table_to_dict,
    write_text_atomic,
)

__all__ = [
    "SCHEMA_VERSION",
    "CalibrationTable",
    "ClipConvention",
    "LatencyModel",
    "MemoryPeak",
    "ModelCalibration",
    "QualityCell",
    "QualityCurve",
    "Source",
    "TableError",
    "load_table",
    "save_table",
    "table_from_dict",
    "table_to_dict",
    "write_text_atomic",
]
