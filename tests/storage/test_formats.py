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
    with pytest.raises(ImportFailed, match=r"pairs.csv, line 1, field 'response_b': is missing"):
        parse_file(path)
