"""Response sets and unpaired KTO rows: per-model files, producers in duplicate detection, encodings, labels."""

import codecs
import json

import pytest
from datasets import load_from_disk
from sqlmodel import Session, select

from storage.export import export_campaign
from storage.formats import parse_file
from storage.imports import ImportFailed, import_file
from storage.models import Campaign, CampaignKind, Pair, Prompt, Response
from tests.storage.test_imports import all_rows, snapshot, write_jsonl

INSTRUCTIONS = [("Add the numbers.", "2 and 2"), ("Name a colour.", ""), ("Say hi.", "")]


def model_file(tmp_path, model, answers, **extra):
    rows = [
        {"instruction": instruction, "input": extra_input, "response": answer, "dataset": "toy", **extra}
        for (instruction, extra_input), answer in zip(INSTRUCTIONS, answers, strict=True)
    ]
    return write_jsonl(tmp_path / f"{model}.jsonl", rows)


def test_per_model_files_import_every_response_under_its_model(engine, tmp_path):
    first = import_file(model_file(tmp_path, "m1", ["4", "Blue.", "Hi!"], temperature=0.7), engine=engine,
                        campaign="ev", model="m1")  # fmt: skip
    second = import_file(model_file(tmp_path, "m2", ["4", "Red.", ""]), engine=engine, campaign="ev", model="m2")
    assert (first.format, first.prompts, first.responses, first.models) == ("responses", 3, 3, {"m1": 3})
    # The same prompts, matched by their exact text; "4" again, but from another model: a response of its own.
    assert (second.prompts, second.responses, second.duplicates, second.empty_responses) == (0, 3, 0, 1)
    assert "1 responses are empty (kept; the first on line 3)" in second.summary()
    assert second.ignored_fields == ["dataset"]
    responses = all_rows(engine, Response)
    assert sorted((r.author, r.text) for r in responses) == sorted(
        [("m1", "4"), ("m1", "Blue."), ("m1", "Hi!"), ("m2", "4"), ("m2", "Red."), ("m2", "")]
    )
    assert {r.author: r.generation_params for r in responses} == {"m1": {"temperature": 0.7}, "m2": {}}
    prompts = {p.messages[0]["content"] for p in all_rows(engine, Prompt)}
    assert prompts == {"Add the numbers.\n2 and 2", "Name a colour.", "Say hi."}
    with Session(engine) as session:
        assert session.exec(select(Campaign.kind)).one() == CampaignKind.preference
    again = import_file(tmp_path / "m1.jsonl", engine=engine, campaign="ev", model="m1")
    assert (again.responses, again.duplicates) == (0, 3)


def test_the_model_comes_from_the_file_or_the_option_and_they_must_agree(engine, tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(ImportFailed, match=r"r.jsonl, line 1, field 'model': is missing: .*--model NAME"):
        import_file(path, engine=engine, campaign="c")
    named = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "p", "output": "r", "generator": "gpt-x"}])
    with pytest.raises(ImportFailed, match=r"line 1, field 'generator': says the model is 'gpt-x', but --model says"):
        import_file(named, engine=engine, campaign="c", model="other")
    assert import_file(named, engine=engine, campaign="c").models == {"gpt-x": 1}
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "response_a": "a", "response_b": "b"}])
    with pytest.raises(ImportFailed, match="--model names the producer of a response set"):
        import_file(pairs, engine=engine, campaign="c", model="m")


def test_responses_name_their_prompt_by_id_and_a_missing_id_writes_nothing(engine, tmp_path):
    import_file(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "first"}, {"prompt": "second"}]), engine=engine,
                campaign="c")  # fmt: skip
    with Session(engine) as session:
        ids = {p.messages[0]["content"]: p.id for p in session.exec(select(Prompt))}
    rows = [{"prompt_id": ids["second"], "response": "two", "model": "m", "generation_params": {"seed": 3}}]
    report = import_file(write_jsonl(tmp_path / "r.jsonl", rows), engine=engine, campaign="c")
    assert (report.prompts, report.responses) == (0, 1)
    (response,) = all_rows(engine, Response)
    assert (response.prompt_id, response.generation_params) == (ids["second"], {"seed": 3})
    before = snapshot(engine)
    rows = [{"prompt_id": ids["first"], "response": "one", "model": "m"}, {"prompt_id": 999, "response": "x",
                                                                            "model": "m"}]  # fmt: skip
    with pytest.raises(ImportFailed, match=r"line 2, field 'prompt_id': 999 is not the id of a prompt of campaign"):
        import_file(write_jsonl(tmp_path / "bad.jsonl", rows), engine=engine, campaign="c")
    assert snapshot(engine) == before


def test_pairs_with_the_same_texts_from_other_models_are_not_duplicates(engine, tmp_path):
    """The issue's 8-model case in small: identical texts from two models are credited to each."""
    rows = [
        {"prompt": "p", "response_a": "x", "response_b": "y", "model_a": "m1", "model_b": "m2"},
        {"prompt": "p", "response_a": "x", "response_b": "y", "model_a": "m3", "model_b": "m4"},
        {"prompt": "p", "response_a": "y", "response_b": "x", "model_a": "m2", "model_b": "m1"},  # swapped: the same
    ]
    report = import_file(write_jsonl(tmp_path / "pairs.jsonl", rows), engine=engine, campaign="c")
    assert (report.pairs, report.duplicates) == (2, 1)
    with Session(engine) as session:
        authors = {(session.get(Response, p.response_a_id).author, session.get(Response, p.response_b_id).author)
                   for p in session.exec(select(Pair))}  # fmt: skip
    assert authors == {("m1", "m2"), ("m3", "m4")}


def test_a_bom_prefixed_csv_keeps_its_model_column(engine, tmp_path):
    path = tmp_path / "m.csv"
    text = 'prompt,response,model,temperature\r\nName a colour.,"Blue,\r\nor red.",m7,0.2\r\n'
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    report = import_file(path, engine=engine, campaign="c")
    (response,) = all_rows(engine, Response)
    assert (report.models, response.author, response.text) == ({"m7": 1}, "m7", "Blue,\nor red.")
    assert response.generation_params == {"temperature": 0.2}


def test_utf16_files_are_read_and_other_encodings_are_named(tmp_path):
    path = tmp_path / "u16.csv"
    path.write_bytes("prompt,response,model\r\nCafé?,Oui.,m\r\n".encode("utf-16"))  # with its byte-order mark
    (record,) = parse_file(path).responses
    assert (record.prompt.messages[0]["content"], record.text, record.model) == ("Café?", "Oui.", "m")
    path.write_bytes("prompt,response,model\nCafé?,Oui.,m\n".encode("cp1252"))
    with pytest.raises(ImportFailed, match=r"line 2: is not valid UTF-8 text .*Windows-1252 or Latin-1"):
        parse_file(path)
    path.write_bytes("prompt,response,model\n".encode("utf-32"))
    with pytest.raises(ImportFailed, match="is UTF-32 text"):
        parse_file(path)


LLAMA_FACTORY_KTO = [
    {"messages": [{"content": "What is 2+2?", "role": "user"}, {"content": "4", "role": "assistant"}], "label": True},
    {"messages": [{"content": "What is 2+2?", "role": "user"}, {"content": "5", "role": "assistant"}], "label": False},
    {"conversations": [{"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}],
     "label": True},
]  # fmt: skip


def test_llama_factory_and_trl_kto_rows_import_with_their_labels(engine, tmp_path):
    path = tmp_path / "kto_en_demo.json"
    path.write_text(json.dumps(LLAMA_FACTORY_KTO))
    report = import_file(path, engine=engine, campaign="k")
    assert (report.format, report.prompts, report.responses, report.labels) == ("kto", 2, 3, {"true": 2, "false": 1})
    trl = [{"prompt": [{"role": "user", "content": "Hi?"}], "completion": [{"role": "assistant", "content": "Yo"}],
            "label": False}]  # fmt: skip
    assert import_file(write_jsonl(tmp_path / "trl.jsonl", trl), engine=engine, campaign="k").format == "kto"
    labels = {(r.text, r.author): r.prior_label for r in all_rows(engine, Response)}
    assert labels == {("4", "unknown"): True, ("5", "unknown"): False, ("Paris.", "unknown"): True,
                      ("Yo", "unknown"): False}  # fmt: skip
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "c", "label": "maybe"}])
    with pytest.raises(ImportFailed, match=r"line 1, field 'label': must be true or false"):
        import_file(bad, engine=engine, campaign="k")
    unlabelled = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    with pytest.raises(ImportFailed, match="field 'label': is missing"):
        import_file(write_jsonl(tmp_path / "u.jsonl", unlabelled), engine=engine, campaign="k", fmt="kto")


def test_a_llama_factory_kto_file_round_trips_its_labels_through_the_kto_export(engine, tmp_path):
    path = tmp_path / "kto_en_demo.json"
    path.write_text(json.dumps(LLAMA_FACTORY_KTO))
    import_file(path, engine=engine, campaign="k", model="sft-v1")
    result = export_campaign(engine=engine, campaign="k", kind="kto", out_dir=tmp_path / "out", test_fraction=0.5)
    dataset = load_from_disk(str(result.out_dir / "dataset"))
    exported = sorted(
        (tuple((m["role"], m["content"]) for m in row["prompt"]), row["completion"][0]["content"], row["label"],
         row["model"], row["label_source"])
        for split in dataset.values() for row in split
    )  # fmt: skip
    given = sorted(
        (tuple((t.get("role") or {"human": "user"}[t["from"]], t.get("content", t.get("value"))) for t in turns[:-1]),
         turns[-1].get("content", turns[-1].get("value")), row["label"], "sft-v1", "prior")
        for row in LLAMA_FACTORY_KTO for turns in [row.get("messages") or row["conversations"]]
    )  # fmt: skip
    assert exported == given
    assert "| sft-v1 | 3 | 100.0% | 2 |" in (result.out_dir / "README.md").read_text()
    with pytest.raises(ValueError, match="has no preference rows"):  # unpaired rows are for KTO only
        export_campaign(engine=engine, campaign="k", kind="preference", out_dir=tmp_path / "p")
