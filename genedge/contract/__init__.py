"""genedge.contract: what the stages agree on, defined once and importing nothing heavy.

The profiler writes through this package, calibrate and the planner read through it, and no stage
re-declares any of it (a test checks):

- :mod:`~genedge.contract.files` — artifact errors, JSON reading, atomic and safe file writing;
- :mod:`~genedge.contract.runs` — the profile run layout, the record columns, statuses, key columns,
  memory rungs, the manifest and its validating reader;
- :mod:`~genedge.contract.clip` — the CLIPScore convention and its range;
- :mod:`~genedge.contract.prompts` — the prompt-file reader (TSV, CSV, Parquet);
- :mod:`~genedge.contract.mappings` — named JSON registries and the label → category mappings.

Only the standard library is imported here; pyarrow is imported inside the two functions that
build or read Parquet.
"""

from genedge.contract.clip import CLIPSCORE_RANGE, ClipConvention
from genedge.contract.files import (
    MAX_JSON_DEPTH,
    ArtifactError,
    UnsafeTargetError,
    check_write_target,
    read_json,
    write_bytes_atomic,
    write_text_atomic,
)
from genedge.contract.mappings import (
    DEFAULT_MAPPING,
    JsonRegistry,
    add_category_mapping_path,
    get_category_mapping,
    label_to_category,
    list_category_mappings,
)
from genedge.contract.prompts import PROMPT_COLUMN, PromptTable, read_prompt_file
from genedge.contract.runs import (
    KEY_COLUMNS,
    MANIFEST_FIELDS,
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    MEMORY_RUNGS,
    RECORD_COLUMNS,
    RECORDS_DIR,
    STATUSES,
    Column,
    Status,
    check_row,
    list_shards,
    read_manifest,
    read_shard,
    record_column_names,
    record_schema,
    rung_column,
    shard_path,
    validate_manifest,
    write_manifest,
)

__all__ = [
    "CLIPSCORE_RANGE",
    "ClipConvention",
    "MAX_JSON_DEPTH",
    "ArtifactError",
    "UnsafeTargetError",
    "check_write_target",
    "read_json",
    "write_bytes_atomic",
    "write_text_atomic",
    "DEFAULT_MAPPING",
    "JsonRegistry",
    "add_category_mapping_path",
    "get_category_mapping",
    "label_to_category",
    "list_category_mappings",
    "PROMPT_COLUMN",
    "PromptTable",
    "read_prompt_file",
    "KEY_COLUMNS",
    "MANIFEST_FIELDS",
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA_VERSION",
    "MEMORY_RUNGS",
    "RECORD_COLUMNS",
    "RECORDS_DIR",
    "STATUSES",
    "Column",
    "Status",
    "check_row",
    "list_shards",
    "read_manifest",
    "read_shard",
    "record_column_names",
    "record_schema",
    "rung_column",
    "shard_path",
    "validate_manifest",
    "write_manifest",
]
