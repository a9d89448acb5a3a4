"""Reading a CSV file a user hands in (study sets, label lists, data-set manifests).

Every problem with the file itself (unreadable, not UTF-8, a NUL byte, a malformed row) is a
``DataError`` naming the file and line, never a traceback from deep inside a path or the
``csv`` module: a NUL byte in a path column, for one, would otherwise reach ``Path.resolve``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from stedloop.errors import DataError


@dataclass(frozen=True)
class CsvTable:
    """A CSV file's header, its rows (each with the line it ends on) and its bytes."""

    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]
    raw: bytes


def _line_of(raw: bytes | str, index: int) -> int:
    newline = b"\n" if isinstance(raw, bytes) else "\n"
    return raw.count(newline, 0, index) + 1  # type: ignore[arg-type]


def read_csv_table(path: Path) -> CsvTable:
    """Read ``path`` as UTF-8 CSV with a header row (a BOM is allowed)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{_line_of(raw, exc.start)}: not UTF-8 text") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise DataError(f"{path}:{_line_of(text, nul)}: a NUL byte; not a text CSV file")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = list(reader.fieldnames or [])
        rows = [(reader.line_num, record) for record in reader]
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    return CsvTable(columns, rows, raw)
