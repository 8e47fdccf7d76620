"""The contract layer: no stage re-declares it, and its readers and writers behave as documented.

- a static check over every stage module: no re-declared layout names, column lists, statuses,
  manifest fields, writers or readers; every record column or manifest field a stage names in a
  literal collection is one the contract declares (and the check catches a planted copy);
- synthetic runs (calibrate's test writer) follow the contract exactly;
- JSON artifacts nested deeper than any real one are a clear error, not a RecursionError;
- atomic writes carry the umask's mode and refuse symlinks and non-regular targets.
"""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from genedge.calibrate import TableError, load_table
from genedge.contract import (
    MANIFEST_FIELDS,
    ArtifactError,
    UnsafeTargetError,
    read_json,
    record_column_names,
    validate_manifest,
    write_text_atomic,
)
from genedge.contract.runs import MANIFEST_OPTIONAL_FIELDS
from genedge.testing import QualityTruth, SyntheticModel, synthetic_run

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("profiler", "calibrate", "optimizer", "genedge/cli", "scripts", "benchmarks")

# Names that only the contract may bind (module constants, classes, functions).
CONTRACT_ONLY = {
    "STATUSES",
    "_STATUSES",
    "KEY_COLUMNS",
    "MEMORY_RUNGS",
    "RECORD_COLUMNS",
    "MANIFEST_NAME",
    "RECORDS_DIR",
    "MANIFEST_SCHEMA_VERSION",
    "MANIFEST_FIELDS",
    "_MANIFEST_FIELDS",
    "ClipConvention",
    "JsonRegistry",
    "write_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_figure",
    "read_json",
    "record_schema",
    "read_manifest",
    "write_manifest",
    "label_to_category",
    "read_prompt_file",
}
LAYOUT_LITERALS = {"manifest.json"}
COLUMNS = set(record_column_names())
MANIFEST_KEYS = set(MANIFEST_FIELDS) | set(MANIFEST_OPTIONAL_FIELDS)


def contract_violations(path: Path) -> list[str]:
    """What a stage module declares that belongs to the contract (empty when nothing)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in CONTRACT_ONLY:
            found.append(f"{path}:{node.lineno}: defines {node.name}")
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name) and target.id in CONTRACT_ONLY:
                found.append(f"{path}:{node.lineno}: binds {target.id}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in LAYOUT_LITERALS or node.value.startswith("shard-"):
                found.append(f"{path}:{node.lineno}: spells the run layout {node.value!r}")
        items = (
            node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(node, (ast.Tuple, ast.List)) else []
        )
        names = [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]
        # A literal collection naming several record columns is a list of columns (a row, a
        # selection): every snake_case name in it must be a column the contract declares. A
        # dict with a run id and a CLIPScore convention is a manifest: its keys must be fields.
        # A collection of manifest fields only (a selection of them) is neither.
        known = MANIFEST_KEYS if {"run_id", "clip_convention"} <= set(names) else COLUMNS
        if set(names) <= MANIFEST_KEYS and known is COLUMNS:
            continue
        if sum(n in COLUMNS for n in names) >= 3 or known is MANIFEST_KEYS:
            unknown = [n for n in names if n.isidentifier() and n.islower() and n not in known]
            if unknown:
                found.append(f"{path}:{node.lineno}: names {unknown} beside contract names")
    return found


def stage_modules() -> list[Path]:
    return sorted(p for stage in STAGES for p in (ROOT / stage).rglob("*.py"))


def test_no_stage_redeclares_the_contract() -> None:
    modules = stage_modules()
    assert len(modules) > 30
    violations = [v for module in modules for v in contract_violations(module)]
    assert violations == []


@pytest.mark.parametrize(
    "source",
    [
        "_STATUSES = ('ok', 'oom', 'error')\n",
        "def write_atomic(path, data):\n    pass\n",
        "target = run_dir / 'records' / f'shard-{i:05d}.parquet'\n",
        "COLUMNS = ('run_id', 'model_key', 'steps', 'peak_gpu_bytes')\n",
        "row = {'run_id': 1, 'model_key': 2, 'steps': 3, 'energy_kwh': 4}\n",
        "manifest = {'schema_version': 3, 'run_id': 'r', 'clip_convention': {}, 'gpu_clock_mhz': 1}\n",
        "FIELDS = ('models', 'steps', 'dtype', 'guidance_scale', 'gpu_clock_mhz')\n",
    ],
)
def test_the_drift_check_catches_a_planted_copy(tmp_path: Path, source: str) -> None:
    module = tmp_path / "stage.py"
    module.write_text(source, encoding="utf-8")
    assert contract_violations(module)


def test_synthetic_runs_follow_the_contract() -> None:
    model = SyntheticModel(key="m", quality={"Basic": QualityTruth(30, 5, 10, 1)}, overhead_s=1, per_step_s=0.1)
    manifest, records = synthetic_run([model], prompts_per_category=2, rng=0)
    assert tuple(records.columns) == record_column_names()
    assert validate_manifest(manifest, "synthetic") == manifest


def test_json_nested_deeper_than_any_real_artifact_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(TableError, match=r"deep.json: document: nested deeper than 32 levels"):
        load_table(deep)
    forty = tmp_path / "forty.json"
    forty.write_text("[" * 40 + "]" * 40, encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"forty.json: document: nested 40 levels deep, more than 32"):
        read_json(forty, "a JSON document")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_carry_the_umask_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        path = write_text_atomic(tmp_path / "out.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_atomic_writes_refuse_symlinks_and_non_regular_files(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("keep", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(UnsafeTargetError, match=r"link.json: is a symbolic link; refusing to write through it"):
        write_text_atomic(link, "{}")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeTargetError, match=r"fifo: is a FIFO, not a regular file; refusing to replace it"):
        write_text_atomic(fifo, "{}")
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(UnsafeTargetError, match=r"out: is a directory, not a regular file"):
        write_text_atomic(folder, "{}")
    assert real.read_text(encoding="utf-8") == "keep" and link.is_symlink() and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.json", "out", "real.json"]


def test_a_new_parquet_file_takes_the_next_free_name_and_replaces_nothing(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as parquet

    from genedge.contract.files import write_new_parquet

    def name(number: int) -> Path:
        return tmp_path / f"part-{number:03d}.parquet"

    # Another writer (or an earlier session with the same number) holds parts 1 and 2 already.
    for number in (1, 2):
        name(number).write_bytes(b"theirs")
    batch = pa.table({"index": [7, 8]})
    assert write_new_parquet(batch, name, 0) == (name(0), 0)
    assert write_new_parquet(batch, name, 1) == (name(3), 3)
    assert [name(n).read_bytes() for n in (1, 2)] == [b"theirs", b"theirs"]
    assert parquet.read_table(name(3)).column("index").to_pylist() == [7, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"part-00{n}.parquet" for n in range(4)]


def test_lazy_packages_export_their_functions_even_after_a_same_named_module_is_imported() -> None:
    import importlib

    import genedge.optimizer as optimizer

    importlib.import_module("genedge.optimizer.planners._anneal")
    importlib.import_module("genedge.optimizer.planners._propose")
    assert callable(optimizer.anneal) and callable(optimizer.propose)
    assert not isinstance(optimizer.anneal, type(optimizer))
    assert "run_methods" in dir(optimizer) and set(optimizer.__all__) <= set(dir(optimizer))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        optimizer.nope  # noqa: B018
