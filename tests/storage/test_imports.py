"""Import into a real database (SQLite and PostgreSQL): counts, idempotence, labels, provenance, atomicity."""

import gzip
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func
from sqlmodel import Session, SQLModel, select, text

from storage import imports
from storage.imports import ImportArguments, ImportFailed, import_file
from storage.models import (
    AuditEvent,
    CalibrationItem,
    Campaign,
    Demonstration,
    Pair,
    Prompt,
    Response,
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def row_counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        return {
            t.name: session.exec(select(func.count()).select_from(t)).one() for t in SQLModel.metadata.sorted_tables
        }


def snapshot(engine) -> dict[str, list]:
    """Every row of every table: a database left unchanged gives the same snapshot."""
    with Session(engine) as session:
        return {t.name: sorted(map(repr, session.execute(t.select()))) for t in SQLModel.metadata.sorted_tables}


def all_rows(engine, model):
    with Session(engine) as session:
        return session.exec(select(model)).all()


def pairs_file(tmp_path, rows=None):
    rows = rows or [
        {"prompt": "What is 2+2?", "response_a": "4", "response_b": "5", "preference": -2, "license": "CC0"},
        {"prompt": "Name a colour.", "response_a": "Blue.", "response_b": "Loud.", "preference": 1},
        {"prompt": "Say hi.", "response_a": "Hi!", "response_b": "Hello!"},
    ]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def test_hh_rlhf_imports_every_record_less_identical_pairs(engine, shared_data):
    expected = {"helpful-online": (1135, 2), "helpful-rejection-sampled": (2717, 32), "harmless-base": (2312, 0)}
    reports = {
        name: import_file(shared_data / "hh-rlhf" / name / "test.jsonl.gz", engine=engine, campaign="hh",
                          drop_identical=True)
        for name in expected
    }  # fmt: skip
    assert {name: (r.pairs, r.identical_dropped) for name, r in reports.items()} == expected
    assert sum(r.pairs + r.identical_dropped + r.duplicates for r in reports.values()) == 1137 + 2749 + 2312
    assert sum(r.duplicates for r in reports.values()) == 0
    pairs = all_rows(engine, Pair)
    assert len(pairs) == 6164 and sum(r.responses for r in reports.values()) == 2 * 6164
    assert 0.45 < sum(p.prior_preference == -1 for p in pairs) / len(pairs) < 0.55
    assert {p.source for p in pairs} == {f"{name}/test.jsonl.gz" for name in expected}
    assert {p.license for p in pairs} == {None}
    again = import_file(shared_data / "hh-rlhf/harmless-base/test.jsonl.gz", engine=engine, campaign="hh")
    assert (again.pairs, again.prompts, again.responses, again.duplicates) == (0, 0, 0, 2312)


def test_oasst_trees_import_as_demonstrations_and_ranked_pairs(engine, shared_data):
    path = shared_data / "oasst_en_100" / "en_100_tree.jsonl"
    report = import_file(path, engine=engine, campaign="oasst", known_as="calibration")
    assert (report.format, report.prompts, report.pairs, report.demonstrations) == ("oasst", 480, 754, 670)
    assert (report.responses, report.calibration_items, report.duplicates) == (641, 754, 0)
    # README: 1,145 human-written messages = 670 assistant replies (our demonstrations) + 475 prompter turns;
    # the 480 prompts are those 475 and the 5 synthetic opening questions whose ranked replies became pairs.
    prompters = [m for line in path.read_text().splitlines() for m in _messages(json.loads(line)["prompt"])]
    prompters = [m for m in prompters if m["role"] == "prompter"]
    assert (len(prompters), sum(m["synthetic"] for m in prompters)) == (480, 5)
    assert len(prompters) - 5 + report.demonstrations == 1145
    pairs = all_rows(engine, Pair)
    assert len({p.prompt_id for p in pairs}) == 212  # the sibling groups with a human rank
    demonstrations = all_rows(engine, Demonstration)
    assert {(d.rater_id, d.source, d.license) for d in demonstrations} == {(None, "oasst", None)}
    assert all_rows(engine, Campaign)[0].kind == "both"
    again = import_file(path, engine=engine, campaign="oasst", known_as="calibration")
    assert (again.prompts, again.pairs, again.demonstrations, again.duplicates) == (0, 0, 0, 480 + 754 + 670)


def _messages(message: dict) -> list[dict]:
    return [message, *(m for reply in message["replies"] for m in _messages(reply))]


def test_prompt_lists_make_a_demonstration_campaign(engine, shared_data):
    for name, count in (("en_100_text.jsonl", 100), ("prompt_lottery_en_250_text.jsonl", 250)):
        report = import_file(shared_data / "oasst_en_100" / name, engine=engine, campaign="write")
        assert (report.format, report.prompts, report.duplicates) == ("prompts", count, 0)
    assert all_rows(engine, Campaign)[0].kind == "demonstration"
    trees = import_file(shared_data / "oasst_en_100/en_100_tree.jsonl", engine=engine, campaign="write")
    assert (trees.prompts, trees.duplicates) == (380, 100)  # the tree files open with the 100 listed prompts
    assert all_rows(engine, Campaign)[0].kind == "both"


@pytest.mark.parametrize("known_as", ["prior", "calibration", "none"])
def test_known_labels_become_priors_calibration_items_or_nothing(engine, tmp_path, known_as):
    report = import_file(pairs_file(tmp_path), engine=engine, campaign="c", known_as=known_as)
    priors = sorted(p.prior_preference for p in all_rows(engine, Pair) if p.prior_preference is not None)
    assert priors == ([] if known_as == "none" else [-2, 1])
    items = sorted(all_rows(engine, CalibrationItem), key=lambda item: item.expected)
    assert report.calibration_items == len(items) == (2 if known_as == "calibration" else 0)
    expected = [(-1, [-2, -1], "factual_priority", "response A"), (1, [1, 2], "factual_priority", "response B")]
    assert [(i.expected, i.accepted, i.kind, i.explanation[-11:-1]) for i in items] == expected[: len(items)]
    assert all(f"import source '{tmp_path.name}/pairs.jsonl'" in i.explanation for i in items)


def test_a_campaign_becomes_both_once_it_holds_pairs_and_demonstrations(engine, tmp_path):
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    import_file(write_jsonl(tmp_path / "prompts.jsonl", ["Write a haiku."]), engine=engine, campaign="c")
    assert all_rows(engine, Campaign)[0].kind == "preference"  # bare prompts change no campaign's kind
    import_file(tmp_path / "prompts.jsonl", engine=engine, campaign="w")
    import_file(pairs_file(tmp_path), engine=engine, campaign="w")
    assert {c.name: c.kind for c in all_rows(engine, Campaign)} == {"c": "preference", "w": "both"}


def test_postgresql_plans_the_queue_knowing_the_imported_rows(engine, tmp_path):
    """Planned for the few rows the statistics said before autovacuum came by, a queue statement took 400 ms."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite plans without statistics")
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    with Session(engine) as session:
        analyzed = "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
        analyzed += " AND schemaname = current_schema()"
        assert {"prompt", "response", "pair"} <= set(session.exec(text(analyzed)).scalars())


def test_rejects_an_unknown_known_as(engine, tmp_path):
    with pytest.raises(ValueError, match="known_as"):
        import_file(pairs_file(tmp_path), engine=engine, campaign="c", known_as="gold")


def test_a_pair_seen_before_in_either_order_is_a_duplicate(engine, tmp_path):
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    swapped = [{"prompt": "Say hi.", "response_a": "Hello!", "response_b": "Hi!"}, {"prompt": "New", "response_a": "x",
               "response_b": "y"}, {"prompt": "New", "response_b": "y", "response_a": "x"}]  # fmt: skip
    report = import_file(write_jsonl(tmp_path / "more.jsonl", swapped), engine=engine, campaign="c")
    assert (report.prompts, report.pairs, report.responses, report.duplicates) == (1, 1, 2, 2)
    other = import_file(tmp_path / "more.jsonl", engine=engine, campaign="elsewhere")
    assert (other.prompts, other.pairs, other.duplicates) == (2, 2, 1)  # duplicates count per campaign


def test_provenance_the_users_source_and_license_win_then_the_record(engine, tmp_path):
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    import_file(pairs_file(tmp_path), engine=engine, campaign="d", source="vendor-2024", license="MIT")
    campaigns = {c.id: c.name for c in all_rows(engine, Campaign)}
    rows = {(campaigns[p.campaign_id], p.source, p.license) for p in all_rows(engine, Prompt)}
    name = f"{tmp_path.name}/pairs.jsonl"
    assert rows == {("c", name, "CC0"), ("c", name, None), ("d", "vendor-2024", "MIT")}
    stamps = {r.created_at for r in [*all_rows(engine, Response), *all_rows(engine, Pair)] if r.source != name}
    assert len(stamps) == 1  # one import time for every row of one import
    audit = all_rows(engine, AuditEvent)
    assert [(a.action, a.target, a.details["pairs"], a.details["file"]) for a in audit] == [
        ("import", "c", 3, str(tmp_path / "pairs.jsonl")),
        ("import", "d", 3, str(tmp_path / "pairs.jsonl")),
    ]


def test_a_saved_dataset_directory_imports_like_a_file(engine, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))  # keep ~/.cache clean
    rows = [
        {"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": f"good {i}"}],
         "rejected": [{"role": "assistant", "content": f"bad {i}"}]} for i in range(6)
    ]  # fmt: skip
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "prefs"))
    report = import_file(tmp_path / "prefs", engine=engine, campaign="c")
    assert (report.format, report.pairs, report.prompts) == ("trl", 6, 6)
    assert {p.source for p in all_rows(engine, Pair)} == {"prefs"}
    (tmp_path / "folder").mkdir()
    write_jsonl(tmp_path / "folder" / "train.jsonl", rows)  # a folder that datasets.load_dataset reads
    assert import_file(tmp_path / "folder", engine=engine, campaign="c").duplicates == 6


def _truncated(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "response_a": "a", "response_b": "b"}] * 2)
    path.write_text(path.read_text() + '{"prompt": "q", "response_a": "a", "resp')
    return path, 3, "field 'response_a'"


def _missing_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,response_a\nfine,ok\n")
    return path, 2, "field 'response_b'"


def _identical(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "same", "rejected": "same"}]
    return write_jsonl(tmp_path / "bad.jsonl", rows), 2, "field 'rejected'"


def _wrong_type(tmp_path):
    rows = [{"prompt": "p", "response_a": "a", "response_b": "b"}] * 4 + [{"prompt": 7, "response_a": "a"}]
    return write_jsonl(tmp_path / "bad.jsonl", rows), 5, "field 'prompt'"


def _undetectable(tmp_path):
    return write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a"}]), 1, "pass --format"


def _truncated_gzip(tmp_path):
    rows = [{"prompt": f"question {i}", "response_a": f"a{i}" * 40, "response_b": f"b{i}" * 40} for i in range(40)]
    whole = gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode())
    (tmp_path / "bad.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    return tmp_path / "bad.jsonl.gz", None, "is the file truncated?"


def _corrupt_parquet(tmp_path):
    rows = [{"prompt": f"p{i}", "response_a": "a", "response_b": "b"} for i in range(20)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "whole.parquet")
    (tmp_path / "bad.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[:-100])
    return tmp_path / "bad.parquet", None, "is not a readable Parquet file"


def _deep(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "response_a": "a", "response_b": "b"}])
    path.write_text(path.read_text() + '{"prompt": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    return path, 2, "nests lists or objects more deeply"


def _surrogate(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "response_a": "a", "response_b": "b"}])
    path.write_text(path.read_text() + '{"prompt": "p", "response_a": "\\udc80", "response_b": "b"}\n')
    return path, 2, "field 'response_a': holds a lone surrogate (U+DC80)"


def _nul(tmp_path):
    rows = [
        {"prompt": "p", "response_a": "a", "response_b": "b"},
        {"prompt": "q", "response_a": "a\x00", "response_b": "b"},
    ]
    return write_jsonl(tmp_path / "bad.jsonl", rows), 2, "field 'response_a': holds a NUL character (U+0000)"


def _extra_csv_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,response_a,response_b,score\nfine,ok,no,3\n")
    return path, None, "field 'score': has the column(s) ['score']"


def _oasst_duplicate_ids(tmp_path):
    reply = {"message_id": "r", "text": "an answer", "role": "assistant", "rank": 0, "replies": []}
    tree = {
        "message_tree_id": "t",
        "prompt": {"message_id": "q", "text": "q?", "role": "prompter", "replies": [reply]},
    }
    return write_jsonl(tmp_path / "bad.jsonl", [tree, tree]), 2, "field 'prompt.message_id': 'q' appears twice"


def _too_many_rows(tmp_path):
    rows = [{"prompt": f"p{i}", "response_a": "a", "response_b": "b"} for i in range(51)]  # CONCORD_IMPORT_MAX_ROWS=50
    return write_jsonl(tmp_path / "bad.jsonl", rows), 51, "limit of 50 records per import (max_rows"


BAD_FILES = [_truncated, _missing_column, _identical, _wrong_type, _undetectable, _truncated_gzip, _corrupt_parquet,
             _deep, _surrogate, _nul, _extra_csv_column, _oasst_duplicate_ids, _too_many_rows]  # fmt: skip


@pytest.mark.parametrize("bad_file", BAD_FILES)
def test_bad_input_names_file_line_and_field_and_writes_nothing(engine, tmp_path, bad_file, monkeypatch):
    monkeypatch.setenv("CONCORD_IMPORT_MAX_ROWS", "50")
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    before = snapshot(engine)
    path, line, names = bad_file(tmp_path)
    with pytest.raises(ImportFailed) as failure:
        import_file(path, engine=engine, campaign="c")
    where = f"{path}, line {line}" if line else f"{path}"
    assert str(failure.value).startswith(where) and names in str(failure.value)
    assert snapshot(engine) == before


def test_an_unknown_format_writes_nothing(engine, tmp_path):
    before = row_counts(engine)
    with pytest.raises(ImportFailed, match=r"pairs.jsonl, field 'format': unknown format 'xml'"):
        import_file(pairs_file(tmp_path), engine=engine, campaign="c", fmt="xml")
    assert row_counts(engine) == before


def test_a_failure_while_writing_rolls_back_the_whole_import(engine, tmp_path, monkeypatch):
    import_file(pairs_file(tmp_path), engine=engine, campaign="c")
    before = snapshot(engine)
    written = []
    original = imports._Writer._write_demonstrations

    def fail_on_the_third_chunk(self, session, records):
        written.append(len(records))
        if len(written) == 3:  # two chunks are committed by now
            raise RuntimeError("disk full")
        original(self, session, records)

    monkeypatch.setattr(imports._Writer, "_write_demonstrations", fail_on_the_third_chunk)
    rows = [{"prompt": f"new {i}", "response_a": "x", "response_b": "y"} for i in range(7)]
    more = write_jsonl(tmp_path / "more.jsonl", rows)
    for campaign in ("c", "new campaign"):
        written.clear()
        with pytest.raises(RuntimeError, match="disk full"):
            import_file(more, engine=engine, campaign=campaign, limits=ImportArguments(chunk_rows=2))
        assert snapshot(engine) == before


def test_nul_is_refused_alike_on_every_engine(engine, tmp_path):
    """PostgreSQL cannot store U+0000 and SQLite can: both refuse it, with the same message, before writing."""
    rows = [
        {"prompt": "p", "response_a": "a", "response_b": "b"},
        {"prompt": "q\x00", "response_a": "a", "response_b": "b"},
    ]
    before = snapshot(engine)
    with pytest.raises(ImportFailed) as failure:
        import_file(write_jsonl(tmp_path / "nul.jsonl", rows), engine=engine, campaign="c")
    assert str(failure.value) == (
        f"{tmp_path / 'nul.jsonl'}, line 2, field 'prompt[0].content': holds a NUL character (U+0000) at character "
        "2, which PostgreSQL cannot store; remove it"
    )
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("options", "field"),
    [({"campaign": "c" * 129}, "campaign"), ({"campaign": " "}, "campaign"), ({"source": "s" * 257}, "source"),
     ({"license": "MIT\x00"}, "license")],
)  # fmt: skip
def test_options_beyond_their_columns_are_refused_alike_on_every_engine(engine, tmp_path, options, field):
    before = snapshot(engine)
    with pytest.raises(ImportFailed) as failure:
        import_file(pairs_file(tmp_path), engine=engine, **{"campaign": "c", **options})
    assert failure.value.field == field
    assert snapshot(engine) == before


def test_empty_responses_are_imported_counted_and_warned_about(engine, tmp_path, caplog):
    rows = [
        {"prompt": "p", "response_a": "a", "response_b": "b"},
        {"prompt": "q", "response_a": " ", "response_b": "b"},
        {"prompt": "r", "response_a": "a", "response_b": ""},
    ]
    with caplog.at_level(logging.WARNING, logger="storage.imports"):
        report = import_file(write_jsonl(tmp_path / "pairs.jsonl", rows), engine=engine, campaign="c")
    assert (report.pairs, report.empty_responses, report.first_empty_line) == (3, 2, 2)
    assert "Warning: 2 pairs or demonstrations have an empty response (kept; the first on line 2)" in report.summary()
    assert any("empty response" in r.message for r in caplog.records if r.levelno == logging.WARNING)
    assert all_rows(engine, AuditEvent)[0].details["empty_responses"] == 2


def test_fields_the_format_does_not_read_are_reported(engine, tmp_path):
    rows = [{"prompt": "p", "response_a": "a", "response_b": "b", "preferance": -1, "note": "x"}]
    report = import_file(write_jsonl(tmp_path / "pairs.jsonl", rows), engine=engine, campaign="c")
    assert report.ignored_fields == ["note", "preferance"]
    assert "fields not read by the pairs format: note, preferance" in report.summary()
