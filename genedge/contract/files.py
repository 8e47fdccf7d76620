"""Artifact errors, JSON reading and safe atomic writing, shared by every file genedge reads or writes.

Every artifact (record shard, manifest, calibration table, plan) is written the same way: into a
temporary file beside the target, flushed to disk, then renamed over it, so a reader sees the old
file or the new one and never half of one. The new file gets the mode a plain ``open()`` would give
it under the user's umask. A target that exists and is not a regular file (a device node, a FIFO, a
directory), or that is a symbolic link, is refused rather than replaced.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_JSON_DEPTH",
    "ArtifactError",
    "UnsafeTargetError",
    "check_input_file",
    "check_not_input",
    "check_write_target",
    "os_error_message",
    "parquet_bytes",
    "parse_json",
    "read_json",
    "remove_temporaries",
    "write_bytes_atomic",
    "write_figure",
    "write_new_parquet",
    "write_json_atomic",
    "write_text_atomic",
]

#: Deepest nesting accepted in a JSON artifact; a real table nests 7 levels, a plan 5.
MAX_JSON_DEPTH = 32

_UMASK_LOCK = threading.Lock()
#: The temporary file :func:`write_bytes_atomic` writes beside its target ``NAME``: ``.NAME.<8 random>.tmp``
#: (:func:`tempfile.mkstemp`'s random part), renamed or linked to ``NAME`` once whole.
_TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


class ArtifactError(ValueError):
    """An artifact (a file genedge reads) is malformed.

    The message names the file, the field (a dotted path, a row or a byte offset) and what was expected.

    Attributes:
        where: the file (or another name for the document).
        field_path: the field, row or position that is wrong.
    """

    def __init__(self, where: str, field_path: str, message: str) -> None:
        self.where = where
        self.field_path = field_path
        super().__init__(f"{where}: {field_path}: {message}")


class UnsafeTargetError(OSError):
    """A write target that genedge refuses to replace (not a regular file, or a symbolic link)."""


def _json_depth(document: Any) -> int:
    """Nesting depth of a parsed JSON document (a scalar is 0), without recursion."""
    deepest, stack = 0, [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth + 1)
            stack.extend((item, depth + 1) for item in value if isinstance(item, (dict, list)))
    return deepest


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key given twice in one object (``json`` keeps the last silently)."""
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return document


def read_json(path: str | os.PathLike[str], what: str, error: type[ArtifactError] = ArtifactError) -> Any:
    """Parse a JSON artifact.

    Args:
        path: the file.
        what: what the file should be, for errors (e.g. ``"a JSON calibration table"``).
        error: the artifact error class to raise (a subclass of :class:`ArtifactError`).

    Raises:
        FileNotFoundError: the file does not exist (IsADirectoryError: it is a directory).
        ArtifactError: it is not a regular file (a FIFO, a device), or (as ``error``) bytes that
            are not UTF-8 (naming the byte offset), text that is not JSON (naming the line), a key
            given twice in one object (naming it), or nesting deeper than :data:`MAX_JSON_DEPTH`.
    """
    path = check_input_file(path, what)
    return parse_json(path.read_bytes(), str(path), what, error)


def parse_json(data: bytes, where: str, what: str, error: type[ArtifactError] = ArtifactError) -> Any:
    """Parse the bytes of a JSON artifact already read (so that what is parsed is what was hashed).

    Args:
        data: the bytes.
        where: the file they came from, for errors.
        what / error: as in :func:`read_json`.

    Raises:
        ArtifactError: as :func:`read_json` (as ``error``), naming ``where``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(where, f"byte {err.start}", f"not UTF-8 text; expected {what}") from err
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as err:
        raise error(
            where,
            f"key {err.key!r}",
            f"given twice in one object; expected unique keys (the second would silently replace the first) in {what}",
        ) from None
    except json.JSONDecodeError as err:
        raise error(where, f"line {err.lineno}", f"not valid JSON ({err.msg}); expected {what}") from err
    except ValueError as err:  # the only other ValueError json raises: an integer of more digits than Python converts
        raise error(
            where, "document", f"holds an integer too long to read (over 4,300 digits); expected {what}"
        ) from err
    except RecursionError as err:
        raise error(where, "document", f"nested deeper than {MAX_JSON_DEPTH} levels; expected {what}") from err
    depth = _json_depth(document)
    if depth > MAX_JSON_DEPTH:
        raise error(where, "document", f"nested {depth} levels deep, more than {MAX_JSON_DEPTH}; expected {what}")
    return document


def check_write_target(path: str | os.PathLike[str]) -> Path:
    """Refuse a target genedge must not replace; return it as a path.

    Call it before long work whose result goes to ``path``, so a bad ``--out`` fails first.

    Raises:
        UnsafeTargetError: ``path`` is a symbolic link, or exists and is not a regular file.
    """
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there yet (a parent that is a file fails later)
        return path
    if stat.S_ISLNK(mode):
        raise UnsafeTargetError(f"{path}: is a symbolic link; refusing to write through it (give the real path)")
    if not stat.S_ISREG(mode):
        raise UnsafeTargetError(f"{path}: is {_kind_of(mode)}, not a regular file; refusing to replace it")
    return path


def _kind_of(mode: int) -> str:
    """What a file that is not a regular file is, from its ``st_mode``."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_input_file(path: str | os.PathLike[str], what: str) -> Path:
    """Refuse an input that is not a regular file (following links), saying what it is; return it as a path.

    Args:
        path: the file.
        what: what it should be, for the message (e.g. ``"a prompt file"``).

    Raises:
        FileNotFoundError: nothing is there.
        IsADirectoryError: a directory is there.
        ArtifactError: something else that is not a regular file (a FIFO, a device, a socket).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: expected {what}, but there is no such file") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path}: is a directory; expected {what}")
    if not stat.S_ISREG(mode):
        raise ArtifactError(str(path), "file", f"is {_kind_of(mode)}, not a regular file; expected {what}")
    return path


#: What to do about a raw operating-system error, by its class (the most specific class first).
_OS_ERROR_REMEDIES: tuple[tuple[type[OSError], str], ...] = (
    (FileExistsError, "something is already there where a new folder or file is needed; choose another path"),
    (NotADirectoryError, "a part of the path is a file, not a folder; choose another path"),
    (IsADirectoryError, "it is a folder where a file is needed; give a file"),
    (PermissionError, "choose a path you may use, or change its permissions"),
    (FileNotFoundError, "check the path"),
)


def os_error_message(err: OSError) -> str:
    """One line for an operating-system error: the path, what went wrong, and what to do.

    genedge's own errors already say this and are returned as they are; a raw one
    (``[Errno 17] File exists: 'out'``) is restated as ``out: File exists: something is already there …``.
    """
    if err.errno is None or err.strerror is None:
        return str(err)
    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None) or "genedge"
    remedy = next((text for kind, text in _OS_ERROR_REMEDIES if isinstance(err, kind)), "")
    return f"{where}: {err.strerror}" + (f": {remedy}" if remedy else "")


def _unwritable(path: Path, err: OSError) -> OSError:
    """``err`` (of the same class) restated: which path could not be written, why, and what to do."""
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), path.parent)
        message = f"{path}: cannot create its folder: {blocking} is a file, not a folder; choose another path"
    elif isinstance(err, PermissionError):
        message = (
            f"{path}: no permission to write in {path.parent} ({err.strerror}); choose a folder you can write to, "
            "or change its permissions"
        )
    else:
        message = f"{path}: cannot write it ({err.strerror or err}); choose another path"
    return type(err)(message)


_PathArgument = str | os.PathLike[str]


def check_not_input(
    outputs: Mapping[str, _PathArgument | None],
    inputs: Mapping[str, _PathArgument | Sequence[_PathArgument] | None],
) -> None:
    """Refuse any output path that would replace one of the command's inputs.

    Call it before any work. Paths are resolved (symbolic links, ``..``), so another spelling of an
    input is refused too, as is a hard link to it, and for an input folder (a profile run) anything
    inside it.

    Args:
        outputs: what each output is called (its option) → its path, or None where it was not given.
        inputs: what each input is called (an option, or an argument's name) → its path, a list of
            paths, or None where it was not given.

    Raises:
        UnsafeTargetError: an output is an input, or inside an input folder.

    Example:
        >>> check_not_input({"--out": "t.json"}, {"--table": "t.json"})  # doctest: +SKIP
        UnsafeTargetError: --out t.json: resolves to the input --table t.json; refusing to replace an input: ...
    """
    for option, out in outputs.items():
        if out is None:
            continue
        target = Path(os.path.realpath(out))
        for label, given in inputs.items():
            paths = [] if given is None else [given] if isinstance(given, (str, os.PathLike)) else list(given)
            for source_path in paths:
                source = Path(os.path.realpath(source_path))
                inside = source.is_dir() and source in target.parents
                same = target.exists() and source.exists() and os.path.samefile(target, source)
                if target == source or inside or same:
                    place = f"inside the input folder {label}" if inside else f"the input {label}"
                    raise UnsafeTargetError(
                        f"{option} {out}: resolves to {place} {source_path}; refusing to replace an input: "
                        "write the output elsewhere"
                    )


def _umask() -> int:
    # The umask can only be read by setting it; the lock keeps two writers in this process from racing.
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, replace: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically, with the umask's mode; refuse unsafe targets.

    Readers (and several writing processes) see the whole old file or the whole new one. The parent
    directory is created when missing.

    Args:
        path: the file.
        data: its bytes.
        replace: replace an existing file; with ``False`` the file is published with a hard link,
            which fails when the name exists, so two writers can never overwrite each other.

    Raises:
        UnsafeTargetError: see :func:`check_write_target`.
        FileExistsError: ``replace`` is false and ``path`` exists.
    """
    path = check_write_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _unwritable(path, err) from err
    try:
        # mkstemp creates 0600; give the file what open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        check_write_target(path)  # the target may have changed kind while we wrote
        if replace:
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise _unwritable(path, err) from err
        else:
            os.link(tmp, path)  # atomic create-if-absent: FileExistsError when another writer won
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_temporaries(
    folder: str | os.PathLike[str], targets: Callable[[str], bool] = lambda name: True, *, recursive: bool = False
) -> list[Path]:
    """Remove the temporary files of atomic writes that a kill cut short, before their rename.

    Call it only while holding the folder's lock (:func:`genedge.contract.locks.hold_lock`): a
    temporary file of a live writer is not a leftover. Nothing else is touched: only names of the
    form ``.NAME.<random>.tmp``, and only regular files.

    Args:
        folder: where to look (nothing happens when it does not exist).
        targets: which target names' temporaries to remove (e.g. one rank's shards); all by default.
        recursive: also look in every folder below.

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    for path in sorted(found):
        match = _TEMPORARY_NAME.match(path.name)
        if match and targets(match["target"]) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    """Write a JSON document atomically, as every genedge document is written: indented, keys sorted, no NaN."""
    return write_text_atomic(path, json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")


def parquet_bytes(table: Any) -> bytes:
    """A ``pyarrow.Table`` as the bytes of one Parquet file (pyarrow's defaults), rendered in memory."""
    import pyarrow.parquet as parquet

    sink = io.BytesIO()
    parquet.write_table(table, sink)
    return sink.getvalue()


def write_new_parquet(table: Any, name: Callable[[int], Path], first: int) -> tuple[Path, int]:
    """Write ``table`` as one new Parquet file of an append-only folder, never over another file.

    Record folders grow by whole files (a profile run's shards, a load test's parts and scores): each
    batch of rows is a new file, published atomically under the first free name, so a reader sees every file
    whole and a writer that resumes, or another writing beside it, cannot overwrite a file or fail
    on a name taken since it looked.

    Args:
        table: the batch, a ``pyarrow.Table``.
        name: number → the file's path.
        first: the number to try first (one past the writer's last file, or the first free one).

    Returns:
        (the path written, its number).

    Raises:
        UnsafeTargetError: see :func:`check_write_target`.
    """
    data = parquet_bytes(table)
    number = first
    while True:
        try:
            return write_bytes_atomic(name(number), data, replace=False), number
        except FileExistsError:
            number += 1  # taken since the writer looked: the next name


def write_figure(figure: Any, path: str | os.PathLike[str], **savefig: Any) -> Path:
    """Save a matplotlib figure like any artifact: rendered in memory, then written atomically.

    Args:
        figure: a ``matplotlib.figure.Figure`` (anything with ``savefig``).
        path: the file; its suffix (``.png``, ``.svg``, ...) is the format.
        savefig: further arguments of ``Figure.savefig`` (dpi, metadata, ...).
    """
    path = check_write_target(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip("."), **savefig)
    return write_bytes_atomic(path, buffer.getvalue())
