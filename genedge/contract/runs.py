"""Profile runs on disk: the layout, the record columns and the manifest (DESIGN §2.2).

A run directory holds ``manifest.json`` and ``records/shard-<rank>-<NNNNN>.parquet``. Each shard is
written once, atomically, and never rewritten (nor replaced: a name that exists is never reused);
one row per generated image, keyed by ``(model_key, steps, seed, prompt_id)``. Every row carries
the run's identity (``run_id``, created once when the run starts) and ``settings_sha256``, the hash
of the settings that define what was measured; rows of another run or other settings are
*foreign*: a resume does not count them as done and calibrate refuses them (:func:`audit_run`).
A shard that cannot be read is moved aside to ``quarantine/`` on request and its images measured
again. Every column has one type and one nullability here; a null means "not measurable here",
never zero, and the ``*_note`` columns say why.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genedge.contract.bounds import MAX_MEMORY_BYTES, MAX_PIXELS
from genedge.contract.clip import ClipConvention
from genedge.contract.fields import FieldReader
from genedge.contract.files import ArtifactError, read_json, write_text_atomic
from genedge.contract.mappings import check_category_mapping

__all__ = [
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
]

MANIFEST_NAME = "manifest.json"
RECORDS_DIR = "records"
QUARANTINE_DIR = "quarantine"
_SHARD_NAME = re.compile(r"^shard-(\d+)-(\d{5,})\.parquet$")  # {number:05d} grows past 99999

#: 2: ``prompt_set.category_mapping`` is the whole mapping document (name, column, labels).
#: 3: ``settings_sha256``, ``host`` (the machine and software measured on) and ``energy``; rows carry
#: ``settings_sha256``, host memory, energy, model load and first-call seconds; ``nvml_note`` became
#: ``memory_note``; ``resolution`` may be null (each model's native size, in ``models[i].resolution``).
#: 4: rows carry the pipeline's own peak memory (``pipeline_peak_bytes``, ``pipeline_memory``), the
#: one-time imports a model's load needed (``import_s``) and the call's measuring outside ``total_s``
#: (``overhead_s``); whole-process peaks no longer grow at the first flush.
MANIFEST_SCHEMA_VERSION = 4
#: Classifier-free guidance a run uses when none is asked for (diffusers' Stable Diffusion default).
DEFAULT_GUIDANCE_SCALE = 7.5
#: Weights' dtype a run uses on a CPU when none is asked for (half precision is the default on CUDA only).
DEFAULT_DTYPE = "float32"
#: Fields every manifest has.
MANIFEST_FIELDS: tuple[str, ...] = (
    "schema_version",
    "run_id",
    "settings_sha256",
    "host",
    "device",
    "versions",
    "dtype",
    "resolution",
    "guidance_scale",
    "scheduler",
    "models",
    "steps",
    "batch_size",
    "seeds",
    "warmup",
    "clip_convention",
    "prompt_set",
    "nvml",
    "energy",
)
#: The manifest fields whose values define what a run measures (hashed into ``settings_sha256``).
#: Output-only options (flush size, saved images) and where the run lies are not among them, so a run
#: resumes with other flush sizes and from a renamed folder; each model's effective resolution is in
#: ``models``, so asking for the native size or naming it is the same run.
SETTINGS_FIELDS: tuple[str, ...] = (
    "models",
    "steps",
    "seeds",
    "prompt_set",
    "dtype",
    "guidance_scale",
    "batch_size",
    "warmup",
    "clip_convention",
)
#: Fields a manifest may have besides those.
MANIFEST_OPTIONAL_FIELDS: tuple[str, ...] = ("save_images", "world_size")


class Status(str, enum.Enum):
    """What became of one image: generated (``ok``), out of memory (``oom``) or another ``error``."""

    OK = "ok"
    OOM = "oom"
    ERROR = "error"


#: The record statuses, as written in the ``status`` column.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

#: The columns that identify one image of a run.
KEY_COLUMNS: tuple[str, ...] = ("model_key", "steps", "seed", "prompt_id")

#: The memory ladder, lowest rung first: torch allocated ≤ torch reserved ≤ NVML process ≤ NVML device.
MEMORY_RUNGS: tuple[str, ...] = (
    "torch_allocated_bytes",
    "torch_reserved_bytes",
    "nvml_process_bytes",
    "nvml_device_bytes",
)


def rung_column(rung: str) -> str:
    """The record column holding a rung's peak, e.g. ``peak_torch_allocated_bytes``."""
    if rung not in MEMORY_RUNGS:
        raise ValueError(f"Expected a memory rung in {MEMORY_RUNGS}, but got {rung!r}")
    return f"peak_{rung}"


#: Host memory peaks per image (any device): this process's resident set, and the memory used on
#: the whole machine where CPU and GPU share it (a Jetson's RAM from ``tegrastats``).
HOST_MEMORY_COLUMNS: tuple[str, ...] = ("peak_rss_bytes", "peak_system_memory_bytes")

#: The process's own memory peaks, best first: what a model's memory figure is taken from (the table's
#: peak, and the pipeline's own peak in ``pipeline_peak_bytes``). NVML's figure for the process, else
#: torch's allocator, on a GPU (a Jetson's too); the resident set without a GPU rung (a CPU run). NVML's
#: device figure and a Jetson's system memory count every process on the machine, so neither is one.
PROCESS_PEAK_COLUMNS: tuple[str, ...] = (
    "peak_nvml_process_bytes",
    "peak_torch_reserved_bytes",
    "peak_torch_allocated_bytes",
    "peak_rss_bytes",
)


@dataclass(frozen=True)
class Column:
    """One record column.

    Attributes:
        name: the column name.
        type: ``string``, ``bool``, ``int32``, ``int64``, ``float64`` or ``list<float64>``.
        nullable: whether a row may hold null (not measurable, not applicable).
    """

    name: str
    type: str
    nullable: bool


#: The record columns, in file order.
RECORD_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "string", False),
    Column("settings_sha256", "string", False),
    Column("model_key", "string", False),
    Column("model_revision", "string", True),
    Column("is_replica", "bool", False),
    Column("steps", "int32", False),
    Column("num_timesteps", "int32", True),
    Column("seed", "int64", False),
    Column("batch_size", "int32", False),
    Column("prompt_id", "string", False),
    Column("prompt", "string", False),
    Column("category", "string", False),
    Column("challenge", "string", True),
    Column("p2_category", "string", True),
    Column("step_latencies_s", "list<float64>", True),
    Column("text_encode_s", "float64", True),
    Column("denoise_s", "float64", True),
    Column("decode_s", "float64", True),
    Column("total_s", "float64", True),
    # The measured call's host seconds less its three stages (genedge's measuring; on a GPU also the launches
    # and synchronize outside the stages' events): text_encode_s + denoise_s + decode_s + overhead_s is the call.
    Column("overhead_s", "float64", True),
    Column("clip_score", "float64", True),
    Column("prompt_truncated", "bool", False),
    *(Column(rung_column(rung), "int64", True) for rung in MEMORY_RUNGS),
    *(Column(name, "int64", True) for name in HOST_MEMORY_COLUMNS),
    # The pipeline's own peak: the whole-process peak named in pipeline_memory (one of PROCESS_PEAK_COLUMNS)
    # less what that figure held just before the model loaded (the runtime, genedge and its CLIPScore model).
    Column("pipeline_peak_bytes", "int64", True),
    Column("pipeline_memory", "string", True),
    # Why each null memory column is null ("torch_*: ...; nvml_*: ..."); null when all were measured.
    Column("memory_note", "string", True),
    # Joules of the pipeline call per image of its batch, and the call's average power in watts.
    Column("energy_j", "float64", True),
    Column("average_power_w", "float64", True),
    Column("energy_note", "string", True),
    # What a cold start costs: the one-time imports the model's load needed that this process had not made
    # yet (0 when an earlier model made them), loading the model, and its first (warm-up) call.
    Column("import_s", "float64", True),
    Column("model_load_s", "float64", True),
    Column("first_call_s", "float64", True),
    Column("image_sha256", "string", True),
    Column("status", "string", False),
    Column("error", "string", True),
    Column("device_name", "string", False),
    Column("dtype", "string", False),
    Column("resolution", "int32", False),
    Column("guidance_scale", "float64", False),
    Column("clip_backbone", "string", False),
    Column("clip_pretrained", "string", False),
    Column("timestamp", "string", False),
)


def record_column_names() -> tuple[str, ...]:
    """The record column names, in file order."""
    return tuple(column.name for column in RECORD_COLUMNS)


def record_schema() -> Any:
    """The Arrow schema of the records (imports pyarrow)."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "bool": pa.bool_(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "list<float64>": pa.list_(pa.float64()),
    }
    return pa.schema([pa.field(c.name, types[c.type], c.nullable) for c in RECORD_COLUMNS])


def check_row(row: Mapping[str, Any]) -> None:
    """Check that a row to write has exactly the record columns and a known status.

    Raises:
        ValueError: naming the missing or unknown columns, or the status.
    """
    names = set(record_column_names())
    missing, unknown = sorted(names - set(row)), sorted(set(row) - names)
    if missing or unknown:
        raise ValueError(
            f"Expected a row with exactly the record columns, but {missing} are missing and {unknown} unknown"
        )
    if row["status"] not in STATUSES:
        raise ValueError(f"Expected a record status in {STATUSES}, but got {row['status']!r}")


def shard_path(run_dir: str | os.PathLike[str], rank: int, number: int) -> Path:
    """The path of a rank's ``number``-th shard: ``RUN/records/shard-<rank>-<NNNNN>.parquet``."""
    return Path(run_dir) / RECORDS_DIR / f"shard-{rank}-{number:05d}.parquet"


def shard_rank(name: str) -> int | None:
    """The rank whose shard a file name is (``shard-<rank>-<NNNNN>.parquet``), or None for another name."""
    match = _SHARD_NAME.match(name)
    return None if match is None else int(match.group(1))


def list_shards(run_dir: str | os.PathLike[str]) -> list[tuple[int, int, Path]]:
    """The shards of a run as ``(rank, number, path)``, sorted; other files in ``records/`` are ignored."""
    folder = Path(run_dir) / RECORDS_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), int(m.group(2)), p) for p in folder.iterdir() if (m := _SHARD_NAME.match(p.name))]
    return sorted(found)


def read_shard(path: str | os.PathLike[str], columns: list[str] | None = None) -> Any:
    """Read one shard as an Arrow table (imports pyarrow), its record columns checked first.

    Args:
        path: the shard.
        columns: the columns to read (default: all). Every record column is checked, read or not.

    Raises:
        ArtifactError: the file is not readable Parquet (a truncated or foreign file), or a record
            column is missing, of another type, or null where it may not be; naming the file, the column
            (and row) and the way forward.
    """
    import pyarrow as pa
    import pyarrow.parquet as parquet

    try:
        schema = parquet.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err) from err
    for column in RECORD_COLUMNS:
        _check_column_type(path, schema, column)
    try:
        table = parquet.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err) from err
    for column in RECORD_COLUMNS:
        if column.name in table.column_names and not column.nullable and table.column(column.name).null_count:
            row = table.column(column.name).is_null().index(True).as_py()
            raise ArtifactError(
                str(path), f"row {row}.{column.name}", f"null; expected a {column.type} value in every record"
            )
    return table


def _unreadable(path: str | os.PathLike[str], err: Exception) -> ArtifactError:
    return ArtifactError(
        str(path),
        "file",
        f"not a readable Parquet shard ({err}); rerun `genedge profile` with --quarantine-corrupt to move it "
        f"to {QUARANTINE_DIR}/ and measure its images again",
    )


def _holds(kind: str, arrow_type: Any) -> bool:
    """Whether an Arrow type holds a record column's values: integers of any width, strings of any size."""
    import pyarrow as pa

    t = pa.types
    if kind == "list<float64>":
        return (t.is_list(arrow_type) or t.is_large_list(arrow_type)) and t.is_floating(arrow_type.value_type)
    check = {
        "string": lambda a: t.is_string(a) or t.is_large_string(a),
        "bool": t.is_boolean,
        "int32": t.is_integer,
        "int64": t.is_integer,
        "float64": t.is_floating,
    }[kind]
    return check(arrow_type)


def _check_column_type(path: str | os.PathLike[str], schema: Any, column: Column) -> None:
    """Refuse a shard whose record column is missing or holds values of another type."""
    import pyarrow as pa

    remedy = (
        "a shard genedge did not write, or one edited since; restore it, or rerun `genedge profile` with "
        f"--quarantine-corrupt to move it to {QUARANTINE_DIR}/ and measure its images again"
    )
    if column.name not in schema.names:
        raise ArtifactError(str(path), column.name, f"missing record column ({remedy})")
    found = schema.field(column.name).type
    # pandas writes a column of nulls only as Arrow's null type.
    if not (_holds(column.type, found) or (column.nullable and pa.types.is_null(found))):
        raise ArtifactError(
            str(path), column.name, f"expected {column.type} values, but the column holds {found} ({remedy})"
        )


def quarantine_shard(path: str | os.PathLike[str]) -> Path | None:
    """Move an unreadable shard to ``RUN/quarantine/`` (never deleted; its keys count as not measured).

    Returns:
        Where it now lies (a numbered suffix keeps an earlier quarantined file of the same name), or
        ``None`` when another process moved it first.
    """
    path = Path(path)
    folder = path.parent.parent / QUARANTINE_DIR
    folder.mkdir(exist_ok=True)
    target, n = folder / path.name, 1
    while target.exists():
        target, n = folder / f"{path.name}.{n}", n + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target


def lock_path(run_dir: str | os.PathLike[str], rank: int) -> Path:
    """The lock file a profiling process of ``rank`` holds while it writes the run."""
    return Path(run_dir) / f".lock-rank{rank}"


#: The columns :func:`audit_run` reads; their values must agree across a run's own rows.
_AGREEING_COLUMNS: tuple[str, ...] = ("device_name", "dtype", "guidance_scale", "clip_backbone", "clip_pretrained")


@dataclass(frozen=True)
class RunAudit:
    """What a run's shards hold, checked against its manifest.

    Attributes:
        rows: rows in all readable shards.
        own: rows of this run with its settings.
        foreign: rows of another run or measured with other settings (``run_id`` or ``settings_sha256``
            differ from the manifest): never counted as measured for this run.
        foreign_runs: the foreign ``(run_id, settings_sha256)`` pairs with their row counts.
        duplicates: own rows beyond the first for one image: a second ``ok`` row of a key, or a copy of
            a failure row (same key and timestamp, as a duplicated shard holds).
        corrupt: shards that cannot be read, or whose columns are not the records' → why.
        mixed: own-row columns that take more than one value (device, dtype, guidance, CLIP
            convention), column → the values seen.
        nan_scores: own ``ok`` rows whose CLIPScore is NaN (not null).
    """

    rows: int
    own: int
    foreign: int
    foreign_runs: dict[tuple[str, str], int]
    duplicates: int
    corrupt: dict[Path, str]
    mixed: dict[str, list[Any]]
    nan_scores: int

    def problems(self) -> list[str]:
        """One line per problem, empty when the run is clean."""
        lines = list(self.corrupt.values())
        if self.foreign:
            runs = ", ".join(f"{run} (settings {sha[:12]}): {n}" for (run, sha), n in sorted(self.foreign_runs.items()))
            lines.append(f"{self.foreign} foreign row(s) from another run or other settings: {runs}")
        if self.duplicates:
            lines.append(f"{self.duplicates} duplicate row(s): images recorded more than once")
        lines += [f"mixed {column} among this run's rows: {values}" for column, values in self.mixed.items()]
        if self.nan_scores:
            lines.append(f"{self.nan_scores} ok row(s) with a NaN clip_score")
        return lines


def audit_run(run_dir: str | os.PathLike[str], manifest: Mapping[str, Any]) -> RunAudit:
    """Check a run's shards against its manifest: foreign rows, duplicates, corrupt shards, mixed settings."""
    import math

    columns = ["run_id", "settings_sha256", *KEY_COLUMNS, "status", "timestamp", "clip_score", *_AGREEING_COLUMNS]
    identity = run_identity(manifest)
    rows = own = 0
    foreign: dict[tuple[str, str], int] = {}
    corrupt: dict[Path, str] = {}
    seen_ok: set[tuple[Any, ...]] = set()
    seen_failed: set[tuple[Any, ...]] = set()
    duplicates = nan_scores = 0
    values: dict[str, set[Any]] = {c: set() for c in _AGREEING_COLUMNS}
    for _, _, path in list_shards(run_dir):
        try:
            data = read_shard(path, columns=columns).to_pydict()
        except ArtifactError as err:
            corrupt[path] = str(err)
            continue
        for row in zip(*(data[c] for c in columns)):
            record = dict(zip(columns, row))
            rows += 1
            pair = (record["run_id"], record["settings_sha256"])
            if pair != identity:
                foreign[pair] = foreign.get(pair, 0) + 1
                continue
            own += 1
            key = tuple(record[c] for c in KEY_COLUMNS)
            if record["status"] == Status.OK.value:
                duplicates += key in seen_ok
                seen_ok.add(key)
                score = record["clip_score"]
                nan_scores += score is not None and math.isnan(score)
            else:
                marked = (*key, record["timestamp"])
                duplicates += marked in seen_failed
                seen_failed.add(marked)
            for column in _AGREEING_COLUMNS:
                values[column].add(record[column])
    mixed = {c: sorted(v, key=str) for c, v in values.items() if len(v) > 1}
    return RunAudit(rows, own, sum(foreign.values()), foreign, duplicates, corrupt, mixed, nan_scores)


def _optional_size(r: FieldReader, value: Any, path: str, maximum: int, what: str) -> None:
    """A size that is null (not fixed, or not known) or a whole number in [1, ``maximum``]."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise r.fail(path, f"expected {what} or null")
    r.bounded(value, path, minimum=1, maximum=maximum, what=what.removeprefix("an integer "))


def validate_manifest(manifest: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check a manifest document; return it as a dict.

    Raises:
        ArtifactError: naming ``where`` and the field: another schema version, a missing or unknown
            field, a device, CLIPScore convention, prompt set or model entry of the wrong shape, a
            resolution or device memory out of range, an empty model key, or settings that no longer
            hash to its ``settings_sha256`` (a manifest edited after its run).
    """
    r = FieldReader(where)
    if not isinstance(manifest, Mapping):
        raise r.fail("document", f"expected a JSON object, but got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        older = isinstance(version, int) and version < MANIFEST_SCHEMA_VERSION
        why = " (a run written by an earlier genedge: profile it again into a new folder)" if older else ""
        raise r.fail("schema_version", f"expected {MANIFEST_SCHEMA_VERSION}, but got {version!r}{why}")
    for field in MANIFEST_FIELDS:
        if field not in manifest:
            raise r.fail(field, "missing field")
    unknown = sorted(set(manifest) - set(MANIFEST_FIELDS) - set(MANIFEST_OPTIONAL_FIELDS))
    if unknown:
        raise r.fail(unknown[0], f"unknown field; a manifest has {list(MANIFEST_FIELDS)}")
    for field, kind in (("run_id", str), ("settings_sha256", str), ("host", dict), ("energy", dict)):
        r.get(manifest, field, "", kind)
    _optional_size(r, manifest["resolution"], "resolution", MAX_PIXELS, "an integer side in pixels")
    device = r.get(manifest, "device", "", dict)
    r.get(device, "name", "device", str)
    _optional_size(r, device.get("memory_bytes"), "device.memory_bytes", MAX_MEMORY_BYTES, "an integer number of bytes")
    convention = r.get(manifest, "clip_convention", "", dict)
    for name in ClipConvention.__dataclass_fields__:
        r.get(convention, name, "clip_convention", str)
    prompt_set = r.get(manifest, "prompt_set", "", dict)
    check_category_mapping(r.get(prompt_set, "category_mapping", "prompt_set", dict), where)
    for i, model in enumerate(r.get(manifest, "models", "", list)):
        if not isinstance(model, dict):
            raise r.fail(f"models[{i}]", "expected an object")
        r.name(r.get(model, "key", f"models[{i}]", str), f"models[{i}].key")
    _check_settings_hash(r, manifest)
    return dict(manifest)


def _check_settings_hash(r: FieldReader, manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest whose settings were changed after its run hashed them (rows carry the hash)."""
    hashed = settings_sha256(manifest)
    if manifest["settings_sha256"] != hashed:
        raise r.fail(
            "settings_sha256",
            f"{manifest['settings_sha256'][:12]}… is not the hash of the manifest's settings ({hashed[:12]}…): "
            "the manifest no longer describes what its records measured (edited since?); restore it, or profile "
            "again into another folder",
        )


def new_run_id() -> str:
    """A fresh id for a run (a profile run, a load test): the UTC time and six random hex digits."""
    import secrets
    from datetime import datetime, timezone

    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_identity(manifest: Mapping[str, Any]) -> tuple[str, str]:
    """``(run_id, settings_sha256)``: a row belongs to the run when its two columns equal these."""
    return (manifest["run_id"], manifest["settings_sha256"])


def settings_document(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a run measures: its :data:`SETTINGS_FIELDS`, the device model and, on a CPU, torch's threads.

    The prompt set counts by content and selection (``sha256``, ``prompt_ids``, mapping), not by the
    path it was read from. Threads change CPU latency, hardly a GPU's (a launcher's
    ``OMP_NUM_THREADS=1`` must not make a GPU run unresumable by a plain process).
    """
    document = {field: manifest[field] for field in SETTINGS_FIELDS}
    document["prompt_set"] = {k: v for k, v in manifest["prompt_set"].items() if k != "name"}
    document["device"] = manifest["device"]["name"]
    if manifest["device"].get("cuda") is None:
        document["threads"] = manifest["host"].get("threads")
    return document


def settings_sha256(manifest: Mapping[str, Any]) -> str:
    """The SHA-256 of :func:`settings_document`: the ``settings_sha256`` of a run and of its rows."""
    import hashlib

    return hashlib.sha256(json.dumps(settings_document(manifest), sort_keys=True, default=str).encode()).hexdigest()


def write_manifest(run_dir: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Validate and write ``RUN/manifest.json`` atomically.

    Raises:
        ArtifactError: the manifest is malformed (see :func:`validate_manifest`).
    """
    target = Path(run_dir) / MANIFEST_NAME
    validate_manifest(manifest, str(target))
    return write_text_atomic(target, json.dumps(manifest, indent=2) + "\n")


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``RUN/manifest.json``.

    Raises:
        FileNotFoundError: the run has no manifest.
        ArtifactError: it is not JSON or not a valid manifest (naming the field).
    """
    file = Path(run_dir) / MANIFEST_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{file}: expected a profile run manifest, but the file does not exist")
    return validate_manifest(read_json(file, "a profile run manifest"), str(file))


def clip_convention_of(manifest: Mapping[str, Any]) -> ClipConvention:
    """The CLIPScore convention a validated manifest records."""
    return ClipConvention(**manifest["clip_convention"])
