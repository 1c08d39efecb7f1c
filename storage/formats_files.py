"""Files and datasets -> numbered raw records, one at a time: JSONL (gzipped or not), JSON arrays, CSV, Parquet,
saved or named datasets. Every reading problem, from a truncated gzip stream to a corrupt Parquet page, is an
ImportFailed that names the file and the record it stopped at; nothing else escapes."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.formats_records import ImportFailed

Rows = Iterator[tuple[int, Any]]
SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".csv", ".parquet")
_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")
MAX_JSON_DEPTH = 800  # above an OASST tree of MAX_TURNS_CEILING turns (two levels a turn)
"""Deeper records are refused before the JSON reader recurses into them: near the interpreter's recursion limit a
finaliser that runs meanwhile fails too, as an exception nothing can catch."""
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_NAME_LENGTH = 256  # Provenance.source


@dataclass
class Source:
    """One file or dataset. ``rows()`` starts a fresh pass each time it is called, so an import can check every
    record in one pass and write in a second without holding the file's records in memory."""

    path: str  # as the user gave it, for messages
    name: str  # the default ``source`` of every row: the file's folder and name, or the dataset's name
    rows: Callable[[], Rows]
    columns: list[str] | None = None  # a CSV file's header: its columns are checked against the format's fields
    stamp: tuple[int, int] | None = None  # (size, mtime) of a file, to notice a change between the passes

    def changed(self) -> bool:
        return self.stamp is not None and _stamp(Path(self.path)) != self.stamp


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def storable_name(name: str) -> str:
    """A file name as both engines store it: undecodable bytes replaced, the last 256 characters kept."""
    return os.fsencode(name).decode("utf-8", "replace")[-_NAME_LENGTH:]


def open_source(path: str | Path, *, max_field_chars: int = 0) -> Source:
    """The file or dataset at ``path``; ImportFailed when it cannot be read at all."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if path.is_dir() or (not path.exists() and not suffix):
        dataset = _load_dataset(str(path))
        return Source(str(path), storable_name(path.name or str(path)), lambda: _dataset_rows(str(path), dataset))
    if not path.is_file():
        raise ImportFailed(path, "no such file")
    if suffix not in SUFFIXES:
        raise ImportFailed(path, "unknown file type: expected .jsonl(.gz), .json, .csv, .parquet or a dataset folder")
    name = storable_name(f"{path.parent.name}/{path.name}" if path.parent.name else path.name)
    source = Source(str(path), name, lambda: _json_rows(path), stamp=_stamp(path))
    if suffix == ".csv":
        csv.field_size_limit(max(csv.field_size_limit(), max_field_chars + 1))
        source.rows, source.columns = (lambda: _csv_rows(path)), _csv_header(path)
    elif suffix == ".parquet":
        source.rows = lambda: _parquet_rows(path)
    return source


def _utf8_lines(f: Any, path: Path) -> Iterator[bytes]:
    """The file's lines as UTF-8 bytes: UTF-16 text (it starts with its byte-order mark, as Excel's "Unicode text"
    does) is transcoded; UTF-32 is refused by name."""
    head = f.peek(4)[:4] if hasattr(f, "peek") else b""
    if head in (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE):
        raise ImportFailed(path, "is UTF-32 text (it starts with a UTF-32 byte-order mark); save it as UTF-8", line=1)
    if not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return iter(f)
    text = io.TextIOWrapper(f, encoding="utf-16", newline="\n")  # the BOM tells the byte order and is dropped
    return (line.encode("utf-8", "surrogatepass") for line in text)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered lines, split at ``\\n`` only (JSON strings may hold U+2028), of a plain or gzipped file."""
    number = 0
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            lines = _utf8_lines(f, path)
            while True:
                try:
                    raw = next(lines)
                except StopIteration:
                    return
                number += 1
                yield number, raw[3:] if number == 1 and raw.startswith(codecs.BOM_UTF8) else raw
    except UnicodeDecodeError as exc:  # UTF-16 text that breaks off or holds a lone half of a surrogate pair
        raise ImportFailed(
            path, f"is not valid UTF-16 text after line {number} ({exc.reason})", line=number + 1
        ) from exc
    except (OSError, EOFError, zlib.error) as exc:
        problem = "ends before its compressed data does; is the file truncated?" if isinstance(exc, EOFError) else exc
        raise ImportFailed(path, f"cannot be read after line {number}: {problem}", line=number + 1) from exc


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = (
            f"is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); a file saved "
            "as Windows-1252 or Latin-1 reads like this: save it as UTF-8"
        )
        raise ImportFailed(path, problem, line=number) from exc


_TOO_DEEP = f"nests lists or objects more deeply than {MAX_JSON_DEPTH} levels"


def _json_value(path: Path, number: int, decode: Callable[[], Any], text: str, start: int = 0) -> Any:
    """``decode()``, or ImportFailed naming the record and, for a line that broke off, the field it broke off in."""
    try:
        return decode()
    except json.JSONDecodeError as exc:
        keys = _JSON_KEY.findall(text, start, exc.pos)  # the field being read when the record broke off
        problem = f"not valid JSON ({exc.msg} at column {exc.colno}); is the line truncated?"
        raise ImportFailed(path, problem, line=number, field=keys[-1] if keys else None) from exc
    except RecursionError as exc:
        raise ImportFailed(path, _TOO_DEEP, line=number) from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise ImportFailed(path, f"not valid JSON ({exc})", line=number) from exc


def _json_rows(path: Path) -> Rows:
    """JSON Lines, or a JSON array (when the file opens with '[') read element by element, numbered 1, 2, ..."""
    lines, first = _lines(path), True
    for number, raw in lines:
        if not raw.strip():
            continue
        if first and raw.lstrip().startswith(b"["):
            yield from _json_array(path, _decode(path, 0, b"".join([raw, *(more for _, more in lines)])))
            return
        first, line = False, _decode(path, number, raw)
        if line.count("[") + line.count("{") > MAX_JSON_DEPTH and _depth(line) > MAX_JSON_DEPTH:
            raise ImportFailed(path, _TOO_DEEP, line=number)
        yield number, _json_value(path, number, lambda line=line: json.loads(line), line)


def _depth(text: str) -> int:
    """How deeply ``text`` nests lists and objects (brackets inside strings not counted)."""
    steps = (1 if b in "[{" else -1 for b in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)))
    return max(itertools.accumulate(steps, initial=0))


def _json_array(path: Path, text: str) -> Rows:
    """The whole text is in memory (use JSON Lines for large files); its records are decoded one at a time."""
    decoder, number = json.JSONDecoder(), 0
    pos = _JSON_SPACE.match(text, text.index("[") + 1).end()
    closed = text.startswith("]", pos)
    pos += closed
    while not closed:
        number += 1
        start = pos
        value, pos = _json_value(path, number, lambda start=start: decoder.raw_decode(text, start), text, start)
        yield number, value
        pos = _JSON_SPACE.match(text, pos).end()
        if text.startswith(",", pos):
            pos = _JSON_SPACE.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            pos, closed = pos + 1, True
        else:
            problem = "not valid JSON: expected ',' or ']' after the record; is the file truncated?"
            raise ImportFailed(path, problem, line=number)
    if _JSON_SPACE.match(text, pos).end() < len(text):
        raise ImportFailed(path, "not valid JSON: more text after the closing ']'")


def _csv_lines(path: Path) -> Iterator[str]:
    for number, raw in _lines(path):
        yield _decode(path, number, raw)


def _csv_header(path: Path) -> list[str]:
    try:
        header = next(csv.reader(_csv_lines(path), strict=True), None)
    except csv.Error as exc:
        raise ImportFailed(path, f"not valid CSV ({exc})", line=1) from exc
    if not header:
        raise ImportFailed(path, "holds no header row")
    return header


def _csv_rows(path: Path) -> Rows:
    """Rows as {column: cell}, numbered by the line they start on (the header is line 1, as in a spreadsheet);
    empty rows are skipped."""
    reader = csv.reader(_csv_lines(path), strict=True)  # strict: an unclosed quote must not swallow the file's rest
    header = next(reader, None) or []  # open_source has read and checked it already
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            unclosed = "; a quoted cell that starts here is never closed" if "end of data" in str(exc) else ""
            raise ImportFailed(path, f"not valid CSV ({exc}){unclosed}", line=start) from exc
        if cells is None:
            return
        if not cells:
            continue
        if len(cells) > len(header):
            extra = [c[:30] for c in cells[len(header) :]][:5]
            problem = f"has {len(cells)} cells, more than the header's {len(header)} columns; the extra: {extra}"
            raise ImportFailed(path, problem, line=start)
        # A spreadsheet ends the lines inside a multi-line cell with CRLF: the same text as JSON would have LF, and
        # duplicate and identical-response checks compare texts exactly.
        yield start, dict(zip(header, (cell.replace("\r\n", "\n") for cell in cells), strict=False))


def _parquet_rows(path: Path) -> Rows:
    import pyarrow.parquet as pq  # heavy: only for Parquet files

    number = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    except Exception as exc:  # noqa: BLE001  (pyarrow raises many kinds; each means: not a readable Parquet file)
        raise ImportFailed(path, f"is not a readable Parquet file ({exc})") from exc
    while True:
        try:
            batch = next(batches, None)
            rows = [] if batch is None else batch.to_pylist()
        except Exception as exc:  # noqa: BLE001  (the same, for a damaged page further in)
            raise ImportFailed(path, f"cannot be read after record {number}: {exc}", line=number + 1) from exc
        if batch is None:
            return
        for row in rows:
            number += 1
            yield number, row


def _load_dataset(name: str) -> Any:
    import datasets  # heavy: only for dataset imports

    saved = (Path(name) / "state.json").exists() or (Path(name) / "dataset_dict.json").exists()  # save_to_disk
    try:
        loaded = (datasets.load_from_disk if saved else datasets.load_dataset)(name)
    except Exception as exc:  # noqa: BLE001  (datasets raises many kinds; each means: cannot load it)
        raise ImportFailed(name, f"not a file, and datasets cannot load it: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if "train" not in splits and len(splits) != 1:
            raise ImportFailed(name, f"has splits {splits} and none is 'train'; save the one to import on its own")
        loaded = loaded["train" if "train" in splits else splits[0]]
    return loaded


def _dataset_rows(name: str, dataset: Any) -> Rows:
    rows, number = iter(dataset), 0
    while True:
        try:
            row = next(rows, None)
        except Exception as exc:  # noqa: BLE001  (arrow errors of a damaged cache file)
            raise ImportFailed(name, f"cannot be read after record {number}: {exc}", line=number + 1) from exc
        if row is None:
            return
        number += 1
        yield number, row
