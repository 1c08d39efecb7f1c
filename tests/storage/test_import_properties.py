"""Property tests of imports: for every format, generated malformed files give ImportFailed, naming the file and (for
a bad record) its line, never another exception, and leave the database unchanged; arbitrary bytes give an import or
an ImportFailed, nothing else.

The default suite runs a moderate number of examples per property and engine. For thousands:

    CONCORD_PROPERTY_EXAMPLES=5000 python -m pytest tests/storage/test_import_properties.py
"""

import csv
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, SQLModel

from storage.formats import render_hh
from storage.imports import ImportArguments, ImportFailed, import_file

EXAMPLES = int(os.environ.get("CONCORD_PROPERTY_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 200,  # the default suite gives the same verdict
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
LIMITS = ImportArguments(max_prompt_chars=60, max_response_chars=60, max_turns=6)  # generated valid text stays under
FORMATS = ["prompts", "pairs", "hh-rlhf", "oasst", "trl", "sharegpt"]
TOO_LONG = "x" * 200  # over every limit above, and over the 128 characters of a model name

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n"), min_size=1, max_size=15)
TEXT = TEXT.filter(lambda s: s.strip() == s and s)


def snapshot(engine) -> dict[str, list]:
    with Session(engine) as session:
        return {t.name: sorted(map(repr, session.execute(t.select()))) for t in SQLModel.metadata.sorted_tables}


@pytest.fixture
def seeded(engine, tmp_path):
    """A database that already holds a campaign, so an import that wrote anything would show."""
    rows = [{"prompt": "Seed?", "response_a": "yes", "response_b": "no", "preference": -1}]
    path = tmp_path / "seed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_file(path, engine=engine, campaign="c", known_as="calibration")
    return engine


# --- valid records: (record, {path of a stored text: required?}) ---------------------------------------------------


def two_texts(draw):
    a, b = draw(TEXT), draw(TEXT)
    return a, b if a != b else b + "!"


def valid(draw, fmt: str, line: int):
    if fmt == "prompts":
        if draw(st.booleans()):
            turns = [{"role": "system", "content": draw(TEXT)}, {"role": "user", "content": draw(TEXT)}]
            return {"messages": turns}, {("messages", 0, "content"): True, ("messages", 1, "content"): True}
        return {"prompt": draw(TEXT), "domain": draw(st.sampled_from(["math", None]))}, {("prompt",): True}
    if fmt == "pairs":
        a, b = two_texts(draw)
        record = {"prompt": draw(TEXT), "response_a": a, "response_b": b, "model_a": draw(TEXT),
                  "preference": draw(st.sampled_from([None, -2, -1, 0, 1, 2]))}  # fmt: skip
        return record, {("prompt",): True, ("response_a",): True, ("response_b",): True, ("model_a",): False}
    if fmt == "hh-rlhf":
        turns = [{"role": "user", "content": draw(TEXT)}]
        if draw(st.booleans()):
            turns += [{"role": "assistant", "content": draw(TEXT)}, {"role": "user", "content": draw(TEXT)}]
        chosen, rejected = two_texts(draw)
        record = {"chosen": render_hh([*turns, {"role": "assistant", "content": chosen}]),
                  "rejected": render_hh([*turns, {"role": "assistant", "content": rejected}])}  # fmt: skip
        return record, {("chosen",): True, ("rejected",): True}
    if fmt == "oasst":
        a, b = two_texts(draw)
        replies = [{"message_id": f"{line}-{i}", "text": text, "role": "assistant", "rank": i, "replies": []}
                   for i, text in enumerate((a, b))]  # fmt: skip
        prompt = {"message_id": f"{line}-q", "text": draw(TEXT), "role": "prompter", "replies": replies}
        paths = {
            ("prompt", "text"): True,
            ("prompt", "replies", 0, "text"): True,
            ("prompt", "replies", 1, "text"): True,
        }
        return {"message_tree_id": f"{line}-q", "prompt": prompt}, paths
    a, b = two_texts(draw)
    if fmt == "trl":
        return {"prompt": draw(TEXT), "chosen": a, "rejected": b}, {("prompt",): True, ("chosen",): True,
                                                                   ("rejected",): True}  # fmt: skip
    record = {"conversations": [{"from": "human", "value": draw(TEXT)}], "chosen": {"from": "gpt", "value": a},
              "rejected": b}  # fmt: skip
    return record, {("conversations", 0, "value"): True, ("chosen", "value"): True, ("rejected",): True}


def put(record, path, value):
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


# --- malformed records: each is wrong for a reason its format documents --------------------------------------------

SEMANTIC = {
    "prompts": [("messages", []), ("messages", [{"role": "narrator", "content": "hi"}]),
                ("messages", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])],
    "pairs": [("preference", 3), ("preference", "much"), ("preference", 1.5), ("preference", True),
              ("response_b", "<same>"), ("prompt", [])],
    "hh-rlhf": [("chosen", "Hello there"), ("rejected", "\n\nHuman: something else entirely\n\nAssistant: no")],
    "oasst": [(("prompt", "replies", 1, "message_id"), "<prompt id>"), (("prompt", "role"), "bot"),
              (("prompt", "replies", 0, "rank"), "first"), (("prompt", "replies"), "none")],
    "trl": [("chosen", [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]),
            ("prompt", [])],
    "sharegpt": [("conversations", "hi"), (("conversations", 0, "from"), "bot"),
                 ("conversations", [{"from": "gpt", "value": "only an answer"}])],
}  # fmt: skip


def malformed(draw, fmt: str, line: int) -> str | bytes:
    """One JSONL line that no import may accept."""
    record, paths = valid(draw, fmt, line)
    how = draw(st.sampled_from(["text", "text", "semantic", "shape", "truncate", "deep", "bytes", "missing"]))
    if how == "text":
        path = draw(st.sampled_from(sorted(paths)))
        bad = draw(
            st.sampled_from(["nul", "surrogate", "long", "type"] if paths[path] else ["nul", "surrogate", "long"])
        )
        old = str(record_at(record, path))
        cut = draw(st.integers(0, len(old)))
        value = {"nul": old[:cut] + "\x00" + old[cut:], "surrogate": old[:cut] + "\udc9f" + old[cut:],
                 "long": TOO_LONG, "type": draw(st.sampled_from([7, 2.5, [1], {"x": 1}, False]))}[bad]  # fmt: skip
        put(record, path, value)
    elif how == "semantic":
        path, value = draw(st.sampled_from(SEMANTIC[fmt]))
        path = path if isinstance(path, tuple) else (path,)
        value = {"<same>": record.get("response_a"), "<prompt id>": f"{line}-q"}.get(value, value) if isinstance(
            value, str) else value  # fmt: skip
        put(record, path, value)
    elif how == "shape":
        return json.dumps(draw(st.sampled_from([7, None, [1, 2], True, 3.5])))
    elif how == "missing":
        del record[draw(st.sampled_from(sorted(k for k in record if k not in ("domain", "model_a", "preference"))))]
    text = json.dumps(record)
    if how == "truncate":
        return text[: draw(st.integers(1, len(text) - 1))]
    if how == "deep":
        return text[:-1] + ', "prompt": ' + "[" * 3000 + "]" * 3000 + "}"
    if how == "bytes":
        cut = draw(st.integers(1, len(text) - 1))
        return text[:cut].encode() + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + text[cut:].encode()
    return text


def record_at(record, path):
    for key in path:
        record = record[key]
    return record


def write_lines(path, lines) -> None:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")) + b"\n"
                              for line in lines))  # fmt: skip


def check_refused(engine, path, line=None, **options) -> None:
    before = snapshot(engine)  # taken afresh: an example that wrongly imported must not fail the ones after it
    with pytest.raises(ImportFailed) as failure:
        import_file(path, engine=engine, campaign="c", limits=LIMITS, **options)
    assert str(failure.value).startswith(str(path))
    if line is not None:
        assert failure.value.line == line, str(failure.value)
    assert snapshot(engine) == before


# --- the properties ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_malformed_record_of_any_format_is_refused_and_writes_nothing(seeded, tmp_path, fmt):

    @SETTINGS
    @given(st.data())
    def run(data):
        good_before, good_after = data.draw(st.integers(1, 4)), data.draw(st.integers(0, 2))
        lines = [json.dumps(valid(data.draw, fmt, i)[0]) for i in range(1, good_before + 1)]
        lines.append(malformed(data.draw, fmt, good_before + 1))
        lines += [json.dumps(valid(data.draw, fmt, 100 + i)[0]) for i in range(good_after)]
        path = tmp_path / f"{fmt}.jsonl"
        write_lines(path, lines)
        check_refused(seeded, path, line=good_before + 1, fmt=fmt)

    run()


CSV_COLUMNS = {"prompts": (["prompt"], ["domain"]), "pairs": (["prompt", "response_a", "response_b"], ["model_a"]),
               "trl": (["prompt", "chosen", "rejected"], [])}  # (required, optional)  # fmt: skip


@pytest.mark.parametrize("fmt", sorted(CSV_COLUMNS))
def test_a_malformed_csv_is_refused_and_writes_nothing(seeded, tmp_path, fmt):
    required, optional = CSV_COLUMNS[fmt]

    @SETTINGS
    @given(st.data())
    def run(data):
        header = required + optional
        rows = [[*(f"{data.draw(TEXT)} {i}" for i in range(len(header)))] for _ in range(data.draw(st.integers(1, 4)))]
        how = data.draw(st.sampled_from(["column", "cells", "nul", "surrogate", "long", "missing", "quote"]))
        line, tail = len(rows) + 1, ""  # the header is line 1
        if how == "column":
            header, rows, line = [*header, data.draw(st.sampled_from(["notes", "preferance", "score", ""]))], [
                [*row, "x"] for row in rows], None  # fmt: skip
        elif how == "cells":
            rows[-1].append("surplus")
        elif how == "missing":
            gone = data.draw(st.integers(0, len(required) - 1))
            header, rows, line = [c for i, c in enumerate(header) if i != gone], [
                [c for i, c in enumerate(row) if i != gone] for row in rows], 2  # fmt: skip
        elif how == "quote":
            tail, line = '"never closed,' + ",".join(["x"] * (len(header) - 1)) + "\n", len(rows) + 2
        else:
            value = {"nul": "a\x00b", "surrogate": "a\udc9fb", "long": TOO_LONG}[how]
            rows[-1][data.draw(st.integers(0, len(header) - 1))] = value
        path = tmp_path / f"{fmt}.csv"
        with open(path, "w", newline="", encoding="utf-8", errors="surrogatepass") as f:
            csv.writer(f).writerows([header, *rows])
            f.write(tail)
        check_refused(seeded, path, line=line, fmt=fmt)

    run()


@pytest.mark.parametrize("kind", ["parquet", "jsonl.gz"])
def test_a_truncated_compressed_or_columnar_file_is_refused_and_writes_nothing(seeded, tmp_path, kind):

    @SETTINGS
    @given(st.data())
    def run(data):
        records = [valid(data.draw, "pairs", i)[0] for i in range(data.draw(st.integers(1, 30)))]
        path = tmp_path / f"pairs.{kind}"
        if kind == "parquet":
            pq.write_table(pa.Table.from_pylist(records), path)
        else:
            path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
        whole = path.read_bytes()
        path.write_bytes(whole[: data.draw(st.integers(0, len(whole) - 1))])
        check_refused(seeded, path)

    run()


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet", "jsonl.gz"])
def test_arbitrary_bytes_are_imported_or_refused_never_another_error(seeded, tmp_path, suffix):
    fields = ["prompt", "messages", "response_a", "response_b", "chosen", "rejected", "conversations", "preference",
              "message_tree_id", "replies", "role", "text", "content", "from", "value"]  # fmt: skip
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(fields), inner, max_size=4),
        max_leaves=12,
    )

    @SETTINGS
    @given(st.data())
    def run(data):
        before = snapshot(seeded)
        path = tmp_path / f"fuzz.{suffix}"
        if suffix == "parquet":
            rows = [{"prompt": data.draw(TEXT), "response_a": data.draw(TEXT), "response_b": data.draw(TEXT)}
                    for _ in range(data.draw(st.integers(1, 5)))]  # fmt: skip
            pq.write_table(pa.Table.from_pylist(rows), path)
            raw = bytearray(path.read_bytes())
            for _ in range(data.draw(st.integers(1, 8))):
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            path.write_bytes(bytes(raw))
        elif data.draw(st.booleans()):
            path.write_bytes(data.draw(st.binary(max_size=300)))
        else:
            values = data.draw(st.lists(json_values, min_size=1, max_size=4))
            text = json.dumps(values) if suffix == "json" else "\n".join(json.dumps(v) for v in values)
            if suffix == "csv":
                text = data.draw(st.text(max_size=200))
            raw = text.encode("utf-8", "surrogatepass")
            path.write_bytes(gzip.compress(raw) if suffix.endswith("gz") else raw)
        try:
            import_file(path, engine=seeded, campaign=data.draw(st.sampled_from(["c", "d"])), limits=LIMITS)
        except ImportFailed:
            assert snapshot(seeded) == before

    run()
