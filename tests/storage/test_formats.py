"""Parsers without a database: real files from ../shared, small files written in tmp_path."""

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.formats import ImportFailed, detect_format, parse_file, parse_hh, render_hh, split_hh

HH_FILES = {"helpful-online": 1137, "helpful-rejection-sampled": 2749, "harmless-base": 2312}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def hh_records(shared_data, name):
    with gzip.open(shared_data / "hh-rlhf" / name / "test.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("name", HH_FILES)
def test_render_hh_gives_back_every_hh_transcript_exactly(shared_data, name):
    records = hh_records(shared_data, name)
    assert len(records) == HH_FILES[name]
    for record in records:
        prompt, chosen, rejected = split_hh(record["chosen"], record["rejected"])
        assert prompt[-1]["role"] == "user"
        assert render_hh([*prompt, {"role": "assistant", "content": chosen}]) == record["chosen"]
        assert render_hh([*prompt, {"role": "assistant", "content": rejected}]) == record["rejected"]
        assert render_hh(parse_hh(record["chosen"])) == record["chosen"]


def test_split_hh_keeps_a_reply_that_runs_on_past_the_shared_dialogue():
    chosen = "\n\nHuman: Hi?\n\nAssistant:  Hello.  \n\nHuman: Bye"
    rejected = "\n\nHuman: Hi?\n\nAssistant: Go away.\n\nAssistant: Really."
    prompt, a, b = split_hh(chosen, rejected)
    assert prompt == [{"role": "user", "content": "Hi?"}]
    assert (a, b) == (" Hello.  \n\nHuman: Bye", "Go away.\n\nAssistant: Really.")


@pytest.mark.parametrize("name", HH_FILES)
def test_hh_files_parse_to_the_stated_counts(shared_data, name):
    parsed = parse_file(shared_data / "hh-rlhf" / name / "test.jsonl.gz", drop_identical=True)
    pairs, identical = {
        "helpful-online": (1135, 2),
        "helpful-rejection-sampled": (2717, 32),
        "harmless-base": (2312, 0),
    }[name]
    assert (parsed.format, len(parsed.pairs), parsed.identical_dropped) == ("hh-rlhf", pairs, identical)
    assert len(parsed.pairs) + parsed.identical_dropped == HH_FILES[name]
    assert len({pair.content_hash for pair in parsed.pairs}) == pairs  # no duplicates inside a file
    # The chosen reply lands on A for about half the pairs, so the side does not give the label away.
    assert 0.45 < sum(pair.preference == -1 for pair in parsed.pairs) / pairs < 0.55
    assert {pair.preference for pair in parsed.pairs} == {-1, 1}


def test_oasst_tree_and_message_files_give_the_same_records(shared_data):
    tree = parse_file(shared_data / "oasst_en_100" / "en_100_tree.jsonl")
    message = parse_file(shared_data / "oasst_en_100" / "en_100_message.jsonl")
    assert tree.format == message.format == "oasst"
    assert (len(tree.prompts), len(tree.pairs), len(tree.demonstrations)) == (480, 754, 670)
    assert [p.content_hash for p in tree.pairs] == [p.content_hash for p in message.pairs]
    assert len({pair.prompt.content_hash for pair in tree.pairs}) == 212  # one prompt per ranked sibling group


@pytest.mark.parametrize(("name", "count"), [("en_100_text.jsonl", 100), ("prompt_lottery_en_250_text.jsonl", 250)])
def test_oasst_prompt_lists_are_prompts(shared_data, name, count):
    parsed = parse_file(shared_data / "oasst_en_100" / name)
    assert (parsed.format, len(parsed.prompts), parsed.pairs) == ("prompts", count, [])
    assert parsed.prompts[0].messages[0]["role"] == "user"


def test_oasst_ranked_siblings_give_every_better_worse_pair(tmp_path):
    def message(text, role, rank=None, replies=(), synthetic=False):
        return {
            "message_id": text,
            "text": text,
            "role": role,
            "rank": rank,
            "synthetic": synthetic,
            "replies": replies,
        }

    replies = [message("second", "assistant", 1), message("first", "assistant", 0, synthetic=True)]
    replies += [message("third", "assistant", 2), message("gone", "assistant", 3) | {"deleted": True}]
    tree = {"message_tree_id": "t", "prompt": message("q", "prompter", replies=replies)}
    parsed = parse_file(write_jsonl(tmp_path / "tree.jsonl", [tree]))
    chosen = {(p.response_a, p.response_b)[p.preference > 0] for p in parsed.pairs}
    rejected = {(p.response_a, p.response_b)[p.preference < 0] for p in parsed.pairs}
    assert len(parsed.pairs) == 3 and chosen == {"first", "second"} and rejected == {"second", "third"}
    assert sorted(d.text for d in parsed.demonstrations) == ["second", "third"]  # human-written, not deleted
    assert parsed.prompts[0].source == "oasst"


def test_chosen_side_is_balanced_and_deterministic(tmp_path):
    rows = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(400)]
    path = write_jsonl(tmp_path / "trl.jsonl", rows)
    first, again = parse_file(path), parse_file(path)
    on_a = [pair.preference == -1 for pair in first.pairs]
    assert 0.4 < sum(on_a) / len(on_a) < 0.6
    assert on_a == [pair.preference == -1 for pair in again.pairs]
    for pair, row in zip(first.pairs, rows, strict=True):
        assert (pair.response_a, pair.response_b)[pair.preference > 0] == row["chosen"]


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ("a bare prompt", "prompts"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "prompts"),
        ({"prompt": "p", "response_a": "a", "response_b": "b"}, "pairs"),
        ({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: b"}, "hh-rlhf"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "trl"),
        ({"conversations": [], "chosen": "a", "rejected": "b"}, "sharegpt"),
        ({"message_tree_id": "t", "prompt": {}}, "oasst"),
        ({"question": "what?"}, None),
    ],
)
def test_detect_format_from_the_first_record(record, fmt):
    assert detect_format(record) == fmt


def test_trl_conversational_and_sharegpt_rows(tmp_path):
    trl = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }
    sharegpt = {
        "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"}],
        "chosen": {"from": "gpt", "value": "4"},
        "rejected": "5",
    }
    parsed = [parse_file(write_jsonl(tmp_path / f"{n}.jsonl", [row])) for n, row in (("t", trl), ("s", sharegpt))]
    assert [p.format for p in parsed] == ["trl", "sharegpt"]
    assert parsed[0].pairs[0].prompt.messages == parsed[1].pairs[0].prompt.messages == trl["prompt"]
    assert parsed[0].pairs[0].content_hash == parsed[1].pairs[0].content_hash


def test_pairs_from_csv_parquet_and_a_saved_dataset_agree(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [
        {"prompt": "p1", "response_a": "a1", "response_b": "b1", "model_a": "m1", "preference": -2, "domain": "math"},
        {"prompt": "p2", "response_a": "a2", "response_b": "b2", "model_a": "m1", "preference": None, "domain": ""},
    ]
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    parsed = [parse_file(tmp_path / name) for name in ("pairs.csv", "pairs.parquet", "saved")]
    for p in parsed:
        assert [(r.preference, r.prompt.domain, r.model_a, r.model_b) for r in p.pairs] == [
            (-2, "math", "m1", None),
            (None, None, "m1", None),
        ]
    assert [p.name for p in parsed] == [f"{tmp_path.name}/pairs.csv", f"{tmp_path.name}/pairs.parquet", "saved"]


def test_a_json_array_file_is_read_record_by_record(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(["one", {"prompt": 5}]))
    with pytest.raises(ImportFailed, match=r"line 2, field 'prompt'"):
        parse_file(path)


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        ({"prompt": "p", "response_a": "a", "response_b": "b", "preference": 3}, "preference", "-2"),
        ({"prompt": "p", "response_a": "a", "response_b": "b", "preference": "much"}, "preference", "integer"),
        ({"prompt": "p", "response_a": "a", "response_b": ["b"]}, "response_b", "must be a string"),
        ({"messages": [{"role": "bot", "content": "x"}], "response_a": "a", "response_b": "b"}, "messages[0]", "role"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "response_a": "a",
          "response_b": "b"}, "messages", "end with a non-empty user message"),
        ({"prompt": "p", "response_a": "a", "response_b": "b", "domain": "d" * 65}, "domain", "longer than 64"),
        ({"response_a": "a", "response_b": "b"}, "prompt", "missing"),
        ({"prompt": "p", "response_a": "same", "response_b": "same"}, "response_b", "drop_identical"),
    ],
)  # fmt: skip
def test_a_bad_field_names_file_line_and_field(tmp_path, row, field, problem):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "response_a": "a", "response_b": "b"}, row])
    with pytest.raises(ImportFailed, match=problem) as failure:
        parse_file(path)
    assert (failure.value.path, failure.value.line, failure.value.field) == (str(path), 2, field)
    assert f"pairs.jsonl, line 2, field '{field}'" in str(failure.value)


def test_identical_pairs_are_dropped_and_counted_when_asked(tmp_path):
    rows = [{"prompt": "p", "chosen": "x", "rejected": "x"}, {"prompt": "p", "chosen": "x", "rejected": "y"}]
    parsed = parse_file(write_jsonl(tmp_path / "trl.jsonl", rows), drop_identical=True)
    assert (len(parsed.pairs), parsed.identical_dropped) == (1, 1)


def test_a_truncated_line_names_the_field_it_broke_off_in(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "p", "response_a": "a", "response_b": "b"}\n\n{"prompt": "p", "response_a": "a, "\n')
    with pytest.raises(ImportFailed, match=r"pairs.jsonl, line 3, field 'response_a': not valid JSON"):
        parse_file(path)


def test_unknown_format_and_undetectable_records_ask_for_format(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "what?"}])
    with pytest.raises(ImportFailed, match=r"odd.jsonl, line 1: cannot tell the format .*--format"):
        parse_file(path)
    with pytest.raises(ImportFailed, match=r"odd.jsonl, field 'format': unknown format 'xml'"):
        parse_file(path, "xml")
    (tmp_path / "odd.txt").write_text("hello")
    with pytest.raises(ImportFailed, match="unknown file type"):
        parse_file(tmp_path / "odd.txt")


def test_a_csv_without_a_needed_column_names_it(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,response_a\nhello,hi there\n")
    with pytest.raises(
        ImportFailed, match=r"pairs.csv, line 2, field 'response_b': is missing"
    ):  # the header is line 1
        parse_file(path)


# --- malformed input: every problem is an ImportFailed naming the file, the record and the field (issue 14) --------


def test_a_corrupt_or_truncated_parquet_file_names_the_file(tmp_path):
    rows = [{"prompt": f"p{i}", "response_a": "a", "response_b": "b"} for i in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    for name in ("truncated.parquet", "corrupt.parquet"):
        with pytest.raises(ImportFailed, match=rf"{name}: is not a readable Parquet file") as failure:
            parse_file(tmp_path / name)
        assert failure.value.path == str(tmp_path / name)


def test_a_truncated_gzip_file_names_the_line_it_stopped_at(tmp_path):
    rows = [{"prompt": f"question {i}", "response_a": f"a{i}" * 50, "response_b": f"b{i}" * 50} for i in range(400)]
    whole = gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode())
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(ImportFailed, match=r"pairs.jsonl.gz, line \d+: cannot be read after line \d+: .*truncated"):
        parse_file(path)


def test_json_nested_200000_levels_deep_is_refused_with_its_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('"a prompt"\n' + '{"prompt": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    with pytest.raises(ImportFailed, match=r"deep.jsonl, line 2: nests lists or objects more deeply"):
        parse_file(path)
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ImportFailed, match=r"deep.json, line 1: nests lists"):
        parse_file(tmp_path / "deep.json")


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        ('{"prompt": "p", "response_a": "bad \\ud800 text", "response_b": "b"}', "response_a",
         r"lone surrogate \(U\+D800\) at character 5"),
        ('{"prompt": "p\\u0000", "response_a": "a", "response_b": "b"}', "prompt[0].content",
         r"NUL character \(U\+0000\) at character 2"),
        ('{"messages": [{"role": "user", "content": "\\udfff"}], "response_a": "a", "response_b": "b"}',
         "messages[0].content", "lone surrogate"),
        ('{"prompt": "p", "response_a": "a", "response_b": "b", "model_a": "m\\u0000"}', "model_a", "NUL"),
        ('{"prompt": "p", "response_a": "a", "response_b": "b", "license": "\\ud83d"}', "license", "lone surrogate"),
    ],
)  # fmt: skip
def test_a_nul_or_a_lone_surrogate_is_refused_with_line_and_field(tmp_path, line, field, problem):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "p", "response_a": "a", "response_b": "b"}\n' + line + "\n")
    with pytest.raises(ImportFailed, match=problem) as failure:
        parse_file(path)
    assert (failure.value.line, failure.value.field) == (2, field)


def test_raw_bytes_that_are_not_utf8_name_their_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b'{"prompt": "p", "response_a": "a", "response_b": "b"}\n{"prompt": "\xed\xa0\x80"}\n')
    with pytest.raises(ImportFailed, match=r"pairs.jsonl, line 2: is not valid UTF-8 text \(byte 0xed"):
        parse_file(path)


def test_nul_in_a_csv_cell_is_refused_with_row_and_column(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,response_a,response_b\nfine,a,b\nhello,a\x00b,c\n")
    with pytest.raises(ImportFailed, match=r"pairs.csv, line 3, field 'response_a': holds a NUL character"):
        parse_file(path)


def test_empty_responses_are_kept_and_counted(tmp_path):
    rows = [
        {"prompt": "p", "response_a": "a", "response_b": "b"},
        {"prompt": "q", "response_a": "", "response_b": "b"},
        {"prompt": "r", "chosen": "  \n", "rejected": "no"},
    ]
    parsed = parse_file(write_jsonl(tmp_path / "pairs.jsonl", rows[:2]))
    assert (len(parsed.pairs), parsed.empty_responses) == (2, 1)
    assert parse_file(write_jsonl(tmp_path / "trl.jsonl", rows[2:])).empty_responses == 1


def test_csv_columns_the_format_does_not_read_are_named(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,response_a,response_b,preferance,notes\nhi,a,b,-1,x\n")
    with pytest.raises(
        ImportFailed, match=r"pairs.csv, field 'preferance': has the column\(s\) \['preferance', 'notes'\]"
    ):
        parse_file(path)
    path.write_text("prompt,response_a,response_b,prompt\nhi,a,b,again\n")
    with pytest.raises(ImportFailed, match=r"field 'prompt': has the column\(s\) \['prompt'\] twice"):
        parse_file(path)


def test_a_csv_row_with_more_cells_than_the_header_names_its_row(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('prompt,response_a,response_b\n"two\nlines",a,b\nhi,a,b,surplus\n')
    with pytest.raises(
        ImportFailed, match=r"pairs.csv, line 4: has 4 cells, more than the header's 3 columns.*surplus"
    ):
        parse_file(path)


def test_fields_other_files_do_not_read_are_listed(tmp_path):
    from storage.formats import Records

    rows = [{"prompt": "p", "response_a": "a", "response_b": "b", "preferance": 1, "id": ""}]
    records = Records(write_jsonl(tmp_path / "pairs.jsonl", rows))
    assert len(list(records)) == 1 and records.ignored_fields == {"preferance"}  # an empty field says nothing


def test_a_message_id_seen_twice_in_oasst_names_both_lines(tmp_path):
    def tree(prompt_id, reply_id):
        reply = {"message_id": reply_id, "text": "an answer", "role": "assistant", "replies": []}
        prompt = {"message_id": prompt_id, "text": "a question", "role": "prompter", "replies": [reply]}
        return {"message_tree_id": prompt_id, "prompt": prompt}

    path = write_jsonl(tmp_path / "trees.jsonl", [tree("q1", "r1"), tree("q2", "r1")])
    with pytest.raises(
        ImportFailed,
        match=r"line 2, field 'prompt.replies\[0\].message_id': 'r1' appears twice: it was first seen on line 1",
    ):  # noqa: E501
        parse_file(path)
    with pytest.raises(ImportFailed, match=r"line 2, field 'prompt.message_id': 'q1' appears twice"):
        parse_file(write_jsonl(tmp_path / "again.jsonl", [tree("q1", "r1"), tree("q1", "r2")]))


@pytest.mark.parametrize(
    ("limits", "row", "field", "problem"),
    [
        ({"max_response_chars": 10}, {"prompt": "p", "response_a": "a" * 11, "response_b": "b"}, "response_a",
         r"has 11 characters, more than the limit of 10 \(max_response_chars, \$CONCORD_IMPORT_MAX_RESPONSE_CHARS\)"),
        ({"max_prompt_chars": 10}, {"messages": [{"role": "system", "content": "s" * 6},
                                                 {"role": "user", "content": "u" * 5}], "response_a": "a",
                                    "response_b": "b"},
         "messages", r"has 11 characters, more than the limit of 10 \(max_prompt_chars"),
        ({"max_turns": 2}, {"messages": [{"role": "user", "content": "x"}] * 3, "response_a": "a", "response_b": "b"},
         "messages", r"has 3 turns, more than the limit of 2 \(max_turns, \$CONCORD_IMPORT_MAX_TURNS\)"),
        ({"max_rows": 1}, {"prompt": "p", "response_a": "a", "response_b": "b"}, None,
         r"is past the limit of 1 records per import \(max_rows, \$CONCORD_IMPORT_MAX_ROWS\)"),
    ],
)  # fmt: skip
def test_limits_fail_with_the_knob_that_raises_them(tmp_path, limits, row, field, problem):
    from storage.formats import ImportArguments

    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "first", "response_a": "a", "response_b": "b"}, row])
    with pytest.raises(ImportFailed, match=problem) as failure:
        parse_file(path, limits=ImportArguments(**limits))
    assert (failure.value.line, failure.value.field) == (2, field)
    assert len(parse_file(path).pairs) == 2  # the defaults let it through


def test_oasst_conversations_deeper_than_max_turns_are_refused(tmp_path):
    from storage.formats import ImportArguments

    node = {"message_id": "last", "text": "q", "role": "prompter", "replies": []}
    for depth in range(300):
        node = {"message_id": str(depth), "text": "t", "role": ("assistant", "prompter")[depth % 2], "replies": [node]}
    path = write_jsonl(tmp_path / "deep.jsonl", [{"message_tree_id": "t", "prompt": node | {"role": "prompter"}}])
    with pytest.raises(ImportFailed, match=r"line 1, field 'prompt(.replies\[0\]){100}': has 101 turns"):
        parse_file(path)
    with pytest.raises(ValueError, match="max_turns must be at most 256"):
        ImportArguments(max_turns=1000)


def test_limits_come_from_the_environment():
    from storage.formats import ImportArguments

    env = {"CONCORD_IMPORT_MAX_ROWS": "5_000", "CONCORD_IMPORT_MAX_TURNS": " ", "CONCORD_IMPORT_CHUNK_ROWS": "50"}
    assert ImportArguments.from_env(env) == ImportArguments(max_rows=5000, chunk_rows=50)
    with pytest.raises(ValueError, match=r"\$CONCORD_IMPORT_MAX_ROWS must be a whole number, got 'lots'"):
        ImportArguments.from_env({"CONCORD_IMPORT_MAX_ROWS": "lots"})
    with pytest.raises(ValueError, match="max_prompt_chars must be a whole number of at least 1"):
        ImportArguments(max_prompt_chars=0)


@pytest.mark.parametrize(
    ("text", "record", "problem"),
    [
        ('["one", {"prompt": "two"}, {"prompt": "thr', 3, "not valid JSON"),
        ('["one" "two"]', 1, "expected ',' or ']' after the record"),
        ('["one"] trailing', None, "more text after the closing"),
        ("[]", None, "holds no records"),
    ],
)
def test_a_json_array_is_read_record_by_record_and_its_breaks_named(tmp_path, text, record, problem):
    path = tmp_path / "prompts.json"
    path.write_text(text)
    with pytest.raises(ImportFailed, match=problem) as failure:
        parse_file(path)
    assert failure.value.line == record


def test_the_default_source_name_fits_its_column(tmp_path):
    folder = tmp_path / ("f" * 200)
    folder.mkdir()
    parsed = parse_file(write_jsonl(folder / ("p" * 200 + ".jsonl"), ["a prompt"]))
    assert len(parsed.name) == 256 and parsed.name.endswith(".jsonl")
