"""genedge.contract: what the stages agree on, defined once and importing nothing heavy.

The profiler writes through this package, calibrate and the planner read through it, and no stage
re-declares any of it (a test checks):

- :mod:`~genedge.contract.files` — artifact errors, JSON reading, atomic and safe file writing, and
  the refusal of an output that would replace an input;
- :mod:`~genedge.contract.locks` — one writer per output folder (an OS file lock);
- :mod:`~genedge.contract.fields` — the one field reader of parsed documents (errors name file and field);
- :mod:`~genedge.contract.bounds` — the physical ranges every number read must lie in, stated once;
- :mod:`~genedge.contract.runs` — the profile run layout, the record columns, statuses, key columns,
  memory rungs, the manifest and its validating reader;
- :mod:`~genedge.contract.clip` — the CLIPScore convention and its range;
- :mod:`~genedge.contract.prompts` — the prompt-file reader (TSV, CSV, Parquet);
- :mod:`~genedge.contract.mappings` — named JSON registries and the label → category mappings;
- :mod:`~genedge.contract.table` and :mod:`~genedge.contract.table_file` — the calibration table: its
  types and their maths, and its validating reader and writer (calibrate writes it; the planner, the
  server and the CLI read it).

Only the standard library is imported (each module on first use of one of its names), and numpy by
the table's curves; pyarrow is imported inside the functions that build or read Parquet.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".bounds": (
            "MAX_BATCH_SIZE",
            "MAX_BUDGET_GPUS",
            "MAX_COUNT",
            "MAX_DELAY_S",
            "MAX_DELAY_WEIGHT",
            "MAX_GUIDANCE_SCALE",
            "MAX_JOULES",
            "MAX_MEMORY_BYTES",
            "MAX_PIXELS",
            "MAX_RATE_PER_S",
            "MAX_ROUTER_WEIGHT",
            "MAX_SCORE_SE",
            "MAX_SECONDS",
            "MAX_STEPS",
            "MAX_THREADS",
            "MAX_TRACE_S",
            "MAX_WATTS",
            "MIN_RATE_PER_S",
            "range_problem",
        ),
        ".clip": ("CLIPSCORE_RANGE", "ClipConvention"),
        ".fields": ("FieldReader",),
        ".files": (
            "MAX_JSON_DEPTH",
            "ArtifactError",
            "UnsafeTargetError",
            "check_not_input",
            "check_write_target",
            "read_json",
            "remove_temporaries",
            "write_bytes_atomic",
            "write_figure",
            "write_text_atomic",
        ),
        ".locks": ("FolderBusyError", "hold_lock"),
        ".mappings": (
            "DEFAULT_MAPPING",
            "MAPPING_FIELDS",
            "JsonRegistry",
            "add_category_mapping_path",
            "check_category_mapping",
            "get_category_mapping",
            "load_category_mapping",
            "label_to_category",
            "list_category_mappings",
        ),
        ".prompts": ("PROMPT_COLUMN", "PROMPT_SUFFIXES", "PromptTable", "read_prompt_file"),
        ".runs": (
            "HOST_MEMORY_COLUMNS",
            "KEY_COLUMNS",
            "MANIFEST_FIELDS",
            "MANIFEST_NAME",
            "MANIFEST_OPTIONAL_FIELDS",
            "MANIFEST_SCHEMA_VERSION",
            "MEMORY_RUNGS",
            "PROCESS_PEAK_COLUMNS",
            "RECORD_COLUMNS",
            "QUARANTINE_DIR",
            "RECORDS_DIR",
            "SETTINGS_FIELDS",
            "STATUSES",
            "Column",
            "RunAudit",
            "Status",
            "audit_run",
            "check_row",
            "clip_convention_of",
            "list_shards",
            "new_run_id",
            "lock_path",
            "quarantine_shard",
            "read_manifest",
            "read_shard",
            "record_column_names",
            "record_schema",
            "rung_column",
            "run_identity",
            "settings_document",
            "settings_sha256",
            "shard_path",
            "shard_rank",
            "validate_manifest",
            "write_manifest",
        ),
    },
)
