"""The prompt-file reader shared by the profiler and the planner.

A prompt file is a table with a header row and a ``Prompt`` column, such as PartiPrompts
(``Prompt, Category, Challenge, Note``):

- ``.tsv`` / ``.tab``: read exactly, one row per line, fields split at tabs, no quoting (one
  PartiPrompts prompt begins with a double quote, which CSV quoting would strip);
- ``.csv``: standard CSV quoting, as Python's ``csv`` module and pandas write it (fields with
  commas, quotes or line breaks are quoted);
- ``.parquet``: read with pyarrow (imported only then).

A UTF-8 byte-order mark before the header and CRLF line ends are accepted. Bytes that are not
UTF-8 are refused, naming the file and the byte offset; a row with another number of fields than
the header is refused, naming the line; a row whose ``Prompt`` is empty (or null in Parquet) is
refused, naming the row, as it is no request.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from genedge.contract.files import ArtifactError, check_input_file

__all__ = ["PROMPT_COLUMN", "PROMPT_SUFFIXES", "PromptTable", "read_prompt_file"]

#: The column holding the prompt text.
PROMPT_COLUMN = "Prompt"
#: File suffixes the reader understands.
PROMPT_SUFFIXES: tuple[str, ...] = (".tsv", ".tab", ".csv", ".parquet")


@dataclass(frozen=True)
class PromptTable:
    """A prompt file's header and rows, every value a string.

    Attributes:
        source: where the table came from (a path or a hub id).
        columns: the header, in file order.
        rows: one tuple of ``len(columns)`` strings per row, in file order.
    """

    source: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def column(self, name: str) -> list[str]:
        """The values of one column.

        Raises:
            ArtifactError: the table has no such column (the message lists the columns it has).
        """
        if name not in self.columns:
            raise ArtifactError(
                self.source, name, f"expected a column {name!r}, but the columns are {list(self.columns)}"
            )
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def sha256(self) -> str:
        """SHA-256 of the table as tab-separated UTF-8 lines (header first, LF ends); for
        PartiPrompts.tsv this equals the file's own hash."""
        digest = hashlib.sha256()
        for row in (self.columns, *self.rows):
            digest.update(("\t".join(row) + "\n").encode("utf-8"))
        return digest.hexdigest()


def _decode(path: Path) -> str:
    data = path.read_bytes()
    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as err:
        raise ArtifactError(
            str(path), f"byte {offset + err.start}", "not UTF-8 text; expected a UTF-8 prompt file (save it as UTF-8)"
        ) from err


def _check_header(path: Path, header: list[str]) -> tuple[str, ...]:
    if not header or not any(header):
        raise ArtifactError(str(path), "line 1", "expected a header row naming the columns, but the file has none")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ArtifactError(str(path), "line 1", f"expected unique column names, but {duplicates} repeat")
    return tuple(header)


def _read_tsv(path: Path) -> PromptTable:
    lines = _decode(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last row
    lines = [line.removesuffix("\r") for line in lines]
    if not lines:
        raise ArtifactError(str(path), "line 1", "expected a header row naming the columns, but the file is empty")
    columns = _check_header(path, lines[0].split("\t"))
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = tuple(line.split("\t"))
        if len(fields) != len(columns):
            raise ArtifactError(
                str(path),
                f"line {number}",
                f"expected {len(columns)} tab-separated fields as in the header, but got {len(fields)}",
            )
        rows.append(fields)
    return PromptTable(str(path), columns, tuple(rows))


def _read_csv(path: Path) -> PromptTable:
    reader = csv.reader(io.StringIO(_decode(path), newline=""), strict=True)
    try:
        records = [(reader.line_num, row) for row in reader if row]
    except csv.Error as err:
        raise ArtifactError(str(path), f"line {reader.line_num}", f"not valid CSV ({err})") from err
    if not records:
        raise ArtifactError(str(path), "line 1", "expected a header row naming the columns, but the file is empty")
    columns = _check_header(path, records[0][1])
    for number, row in records[1:]:
        if len(row) != len(columns):
            raise ArtifactError(
                str(path),
                f"line {number}",
                f"expected {len(columns)} comma-separated fields as in the header, but got {len(row)}",
            )
    return PromptTable(str(path), columns, tuple(tuple(row) for _, row in records[1:]))


def _read_parquet(path: Path) -> PromptTable:
    try:
        import pyarrow.parquet as parquet
    except ImportError as err:
        raise ImportError('Reading a .parquet prompt file needs pyarrow: pip install "genedge[profile]"') from err
    try:
        table = parquet.read_table(path)
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise ArtifactError(str(path), "file", f"not a readable Parquet file ({err})") from err
    columns = _check_header(path, list(table.column_names))
    values = [["" if v is None else str(v) for v in table.column(name).to_pylist()] for name in columns]
    return PromptTable(str(path), columns, tuple(zip(*values)))


def read_prompt_file(path: str | os.PathLike[str]) -> PromptTable:
    """Read a prompt file (TSV exactly, CSV with standard quoting, or Parquet).

    Raises:
        FileNotFoundError: the file does not exist (IsADirectoryError: it is a directory).
        ArtifactError: not a regular file (a FIFO, a device), an unknown suffix, bytes that are not
            UTF-8 (naming the byte offset), a missing or repeated header, a row whose field count
            differs from the header's, or an empty or null ``Prompt`` (naming the row).
    """
    path = check_input_file(path, "a prompt file")
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        table = _read_tsv(path)
    elif suffix == ".csv":
        table = _read_csv(path)
    elif suffix == ".parquet":
        table = _read_parquet(path)
    else:
        raise ArtifactError(str(path), "suffix", f"expected one of {list(PROMPT_SUFFIXES)}, but got {path.suffix!r}")
    if PROMPT_COLUMN in table.columns:
        blank = [row for row, text in enumerate(table.column(PROMPT_COLUMN), start=1) if not text.strip()]
        if blank:
            raise ArtifactError(
                str(path),
                f"{PROMPT_COLUMN} row {blank[0]}",
                f"expected prompt text on every row, but {len(blank)} rows have none (empty, or null in Parquet): "
                "drop or fill them",
            )
    return table
