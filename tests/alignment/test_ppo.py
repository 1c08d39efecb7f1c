"""PPO end to end on tiny models: a toy reward (tests/alignment/conftest.py) rises with the KL bounded, lineage to a
reward run, LoRA, resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from sqlmodel import Session, select
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedTokenizerFast,
)

from alignment.arguments import ModelArguments
from alignment.evaluate import evaluate_run
from alignment.ppo_config import PPOArguments
from alignment.recipe import RecipeError, parse_recipe
from alignment.rollout import Episodes, encode_prompts, load_roles, load_scorer, measure, sample
from alignment.runner import train
from storage.accounts import create_user
from storage.db import make_engine, upgrade_database, write_session
from storage.erasure import erase_user
from storage.models import ExportRecord, TrainingRun, UserCreate
from tests.alignment.conftest import SCALE, TOPICS, TWO_GLOO_PROCESSES, seed_campaign

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "tiny"
LOGGED = ("score", "score_ci_low", "score_ci_high", "kl", "entropy", "clip_fraction", "value_loss",
          "explained_variance", "approx_kl", "response_length", "eos_rate", "episodes_per_second", "time_generation",
          "time_scoring", "time_optimisation", "kl_coef")  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine waiting for it costs seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def other_encoder(tmp_path_factory) -> str:
    """A 2-layer BERT whose tokenizer, like all-MiniLM's, is not the policy's: a lowercasing WordPiece vocabulary of
    its own, with CLS and SEP (so it gets Concord's plain-turns template)."""
    folder = tmp_path_factory.mktemp("other-bert")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer.train_from_iterator(
        [f"User: Tell me about {t}. Assistant: {t} are interesting." for t in TOPICS], trainer
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")  # fmt: skip
    config = BertConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, pad_token_id=fast.pad_token_id)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


def _overrides(tmp_path, campaign: str, policy: str, reward: str, name: str, *extra: str) -> list[str]:
    return ["--model_name_or_path", policy, "--reward_model_path", reward, "--campaign", campaign,
            "--output_root", str(tmp_path / "runs"), "--run_name", name, *extra]  # fmt: skip


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_toy_reward_scores_the_fraction_of_target_tokens(toy_reward):
    model, tokenizer = (
        AutoModelForSequenceClassification.from_pretrained(toy_reward),
        AutoTokenizer.from_pretrained(toy_reward),
    )
    texts = ["the the the the", "xyz abc", "eee", "Tell me about owls."]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = model(**batch).logits[:, 0]
    for text, ids, got in zip(texts, batch["input_ids"], scores, strict=True):
        tokens = [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(ids)
                  if t != tokenizer.pad_token]  # fmt: skip
        fraction = sum("e" in t for t in tokens) / len(tokens)
        assert got.item() == pytest.approx(SCALE * fraction / math.sqrt(1 + fraction**2), abs=1e-4), text
    assert scores[1] == 0 and scores[2] == pytest.approx(SCALE / math.sqrt(2), abs=1e-4)


def test_ppo_raises_the_toy_reward_while_kl_stays_bounded(sqlite_engine, tmp_path, tiny_causal_lm, toy_reward):
    campaign = seed_campaign(sqlite_engine, tmp_path)
    every = ["--num_sample_prompts", "5"]  # all the held-out prompts, as `launch.py eval` answers them
    args = _overrides(tmp_path, campaign, tiny_causal_lm, toy_reward, "ppo-toy", "--max_steps", "25", *every)

    run = train(RECIPES / "ppo.yaml", args, engine=sqlite_engine)

    model_dir = Path(run.output_path) / "model"
    steps = [line for line in _jsonl(model_dir / "metrics.jsonl") if "score" in line]
    assert [line["step"] for line in steps] == list(range(1, 26))
    assert all(name in line and math.isfinite(line[name]) for line in steps for name in LOGGED)
    first, last = (sum(line["score"] for line in part) / 5 for part in (steps[:5], steps[-5:]))
    kl = [line["kl"] for line in steps]
    # Risen beyond a step's noise. How far varies between runs of the same code: one clean-clone CI run rose 0.155
    # (0.928 -> 1.083) where the run before it passed 0.2; the held-out check below asks 0.1 as well.
    assert last > first + 0.1, f"score {first:.3f} -> {last:.3f}"
    # Bounded: far from a collapse onto a few tokens, which costs 20-48 nats. This run's KL levels off around 7-9
    # nats with small differences between machines (CI's last five averaged 8.2), so the bound leaves that room.
    assert max(kl) < 14 and sum(kl[-5:]) / 5 < 12, kl
    assert steps[-1]["entropy"] > 4.0  # log(400) = 5.99 at the start: still far from a collapse
    assert run.metrics["heldout_score"] > run.metrics["heldout_score_start"] + 0.1
    assert run.metrics["heldout_kl_start"] == pytest.approx(0.0, abs=1e-5)  # the policy starts as its reference
    samples = _jsonl(model_dir / "samples.jsonl")
    assert {line["step"] for line in samples} == {0, 25} and len(samples) == 10
    assert all(isinstance(line["completion"], str) and line["prompt"][0]["role"] == "user" for line in samples)
    # The saved policy reloads, differs from the start and prefers target tokens more than it did.
    before, after = (AutoModelForCausalLM.from_pretrained(path) for path in (tiny_causal_lm, model_dir))
    assert any(not torch.equal(p, before.state_dict()[n]) for n, p in after.state_dict().items())
    assert run.status == "finished" and run.data_source == campaign and run.export_ids == []
    readiness = json.loads((Path(run.output_path) / "readiness.json").read_text())
    assert readiness["ready"] and "prompts are not rated" in json.dumps(readiness["checks"])
    # `launch.py eval` answers the held-out prompts again with the same seeded noise: the same figures as training's.
    heldout = evaluate_run(Path(run.output_path))
    assert heldout["prompts"] == 5
    assert heldout["heldout_score"] == pytest.approx(run.metrics["heldout_score"], abs=1e-4)
    assert heldout["heldout_score_start"] == pytest.approx(run.metrics["heldout_score_start"], abs=1e-4)
    assert heldout["heldout_kl"] == pytest.approx(run.metrics["heldout_kl"], rel=1e-3)
    evaluated = _jsonl(Path(run.output_path) / "eval" / "heldout-samples.jsonl")
    assert [line["completion"] for line in evaluated] == [line["completion"] for line in samples if line["step"] == 25]


@pytest.mark.slow
def test_the_kl_penalty_holds_the_policy_near_its_reference(sqlite_engine, tmp_path, tiny_causal_lm, toy_reward):
    """The same run twice: with a weak fixed coefficient, and with an adaptive one aiming at 0.5 nats per response.
    The second must end far closer to the reference, its coefficient moved by the controller."""
    campaign = seed_campaign(sqlite_engine, tmp_path)
    runs = {}
    for name, extra in {
        "weak": [],
        "adaptive": ["--kl_coef", "0.2", "--kl_target", "0.5", "--kl_horizon", "200"],
    }.items():
        args = _overrides(tmp_path, campaign, tiny_causal_lm, toy_reward, f"ppo-{name}", "--max_steps", "20", *extra)
        run = train(RECIPES / "ppo.yaml", args, engine=sqlite_engine)
        runs[name] = [line for line in _jsonl(Path(run.output_path) / "model" / "metrics.jsonl") if "score" in line]
    weak, adaptive = (sum(line["kl"] for line in runs[name][-5:]) / 5 for name in ("weak", "adaptive"))
    # Runs differ a little between machines (CI: 3.49 against 1.26 nats): a factor of two is far, not marginal.
    assert adaptive < weak / 2, (weak, adaptive)
    coefficients = [line["kl_coef"] for line in runs["adaptive"]]
    # The controller moved it (up or down depending on where this run's KL sat against 0.5); the weak one is fixed.
    assert coefficients[0] == 0.2 and len(set(coefficients)) > 1
    assert {line["kl_coef"] for line in runs["weak"]} == {0.05}


def test_ppo_scores_with_a_reward_run_of_another_tokenizer_and_links_to_it(
    sqlite_engine, tmp_path, tiny_causal_lm, other_encoder
):
    """The normal case: an encoder reward model (BERT-like, its own tokenizer and plain-turns template) trained by a
    reward run scores a decoder policy. The PPO run links to the reward run's export, so erasing a rater of it makes
    the PPO run stale."""
    campaign = seed_campaign(sqlite_engine, tmp_path)
    reward = train(RECIPES / "reward.yaml", ["--model_name_or_path", other_encoder, "--campaign", campaign,
                                             "--output_root", str(tmp_path / "runs"), "--run_name", "bert-reward"],
                   engine=sqlite_engine)  # fmt: skip
    refused = _overrides(tmp_path, campaign, tiny_causal_lm, "run:bert-reward", "ppo-refused", "--max_steps", "1")
    with pytest.raises(ValueError, match="value_model_init: policy"):
        train(RECIPES / "ppo.yaml", refused, engine=sqlite_engine)

    args = _overrides(tmp_path, campaign, tiny_causal_lm, "run:bert-reward", "ppo-bert", "--max_steps", "2",
                      "--value_model_init", "policy")  # fmt: skip
    run = train(RECIPES / "ppo.yaml", args, engine=sqlite_engine)

    assert run.status == "finished" and run.metrics["train_steps"] == 2
    assert run.recipe["training"]["reward_model_path"] == "run:bert-reward"
    assert run.recipe["reward_model_path"] == str(Path(reward.output_path) / "model")
    assert run.export_ids == reward.export_ids
    # Each held-out score is the reward model's own, on the dialogue rendered with its own template.
    scorer = AutoModelForSequenceClassification.from_pretrained(Path(reward.output_path) / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(Path(reward.output_path) / "model")
    for line in _jsonl(Path(run.output_path) / "model" / "samples.jsonl")[:3]:
        dialogue = [*line["prompt"], {"role": "assistant", "content": line["completion"]}]
        ids = tokenizer.apply_chat_template(dialogue, tokenize=True, return_dict=True, return_tensors="pt")
        assert ids["input_ids"][0, 0] == tokenizer.cls_token_id and ids["input_ids"][0, -1] == tokenizer.sep_token_id
        with torch.no_grad():
            assert scorer(**ids).logits[0, 0].item() == pytest.approx(line["score"], abs=1e-4)
    with write_session(sqlite_engine) as session, session.begin():
        rater = create_user(session=session, user=UserCreate(username="rita", password="a-long-password"))
        session.get(ExportRecord, reward.export_ids[0]).rater_ids = [rater.id]
    with write_session(sqlite_engine) as session, session.begin():
        report = erase_user(session=session, user_id=rater.id, mode="anonymise", actor_id=None)
    assert run.id in report.stale_runs and reward.id in report.stale_runs
    with Session(sqlite_engine) as session:
        assert session.get(TrainingRun, run.id).stale


def test_lora_ppo_uses_the_policy_without_adapters_as_reference(sqlite_engine, tmp_path, tiny_causal_lm, toy_reward):
    campaign = seed_campaign(sqlite_engine, tmp_path)
    lora = ["--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj"]
    args = _overrides(tmp_path, campaign, tiny_causal_lm, toy_reward, "ppo-lora", "--max_steps", "2", *lora,
                      "--num_sample_prompts", "5")  # fmt: skip
    run = train(RECIPES / "ppo.yaml", args, engine=sqlite_engine)
    model_dir = Path(run.output_path) / "model"
    adapter = json.loads((model_dir / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and adapter["r"] == 4
    assert run.metrics["heldout_kl_start"] == pytest.approx(0.0, abs=1e-5)  # adapters start as a no-op
    weights = load_file(model_dir / "adapter_model.safetensors")
    assert any(weights[name].abs().sum() > 0 for name in weights if "lora_B" in name)  # B starts at 0: trained
    # The reference (adapters off) was not trained: the policy now differs from it on the held-out answers.
    assert run.metrics["heldout_kl"] != pytest.approx(0.0, abs=1e-4)
    heldout = evaluate_run(Path(run.output_path))  # the adapter is loaded on the start point, and switched off for it
    assert heldout["heldout_kl"] == pytest.approx(run.metrics["heldout_kl"], rel=1e-3)
    assert heldout["heldout_score_start"] == pytest.approx(run.metrics["heldout_score_start"], abs=1e-4)


def test_responses_are_measured_the_same_alone_or_left_padded_in_a_batch(tiny_causal_lm, toy_reward, tmp_path):
    args = PPOArguments(output_dir=str(tmp_path), use_cpu=True, reward_model_path=toy_reward, rollout_batch_size=2,
                        per_device_train_batch_size=2, gradient_accumulation_steps=1, per_device_eval_batch_size=2,
                        response_length=6, temperature=1.0)  # fmt: skip
    roles = load_roles(args, ModelArguments(model_name_or_path=tiny_causal_lm, dtype="float32"))
    prompts = [[{"role": "user", "content": "Hi."}], [{"role": "user", "content": "Tell me about maple trees."}]]
    torch.manual_seed(0)
    batch = sample(roles, prompts, args, "cpu")
    assert batch.query_mask[0].tolist().count(0) > 0  # the short prompt is left-padded
    measure(roles, batch, args)
    for row in range(2):
        rows = slice(row, row + 1)
        query = encode_prompts(roles.tokenizer, prompts[rows], args.max_prompt_length)
        alone = Episodes(prompts[rows], *query, batch.response_ids[rows], batch.mask[rows], batch.has_eos[rows],
                         batch.texts[rows])  # fmt: skip
        assert alone.query_mask.all()
        measure(roles, alone, args)
        mask = batch.mask[row]
        for name in ("logprobs", "ref_logprobs", "values"):
            assert torch.allclose(getattr(alone, name)[0][mask], getattr(batch, name)[row][mask], atol=1e-5), name
        assert alone.scores[0].item() == pytest.approx(batch.scores[row].item(), abs=1e-5)


def test_a_lora_reward_run_is_loaded_with_its_adapter(tmp_path, toy_reward):
    tokenizer = AutoTokenizer.from_pretrained(toy_reward)
    batch = tokenizer(["the the", "eee e"], return_tensors="pt", padding=True)
    base = AutoModelForSequenceClassification.from_pretrained(toy_reward, num_labels=1)
    with torch.no_grad():
        untouched = base(**batch).logits
    config = LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj", "v_proj"], modules_to_save=["score"])
    adapted = get_peft_model(base, config)
    with torch.no_grad():
        adapted.base_model.model.score.modules_to_save["default"].weight.mul_(-2.0)  # the run's own head
    adapted.save_pretrained(tmp_path / "lora")
    tokenizer.save_pretrained(tmp_path / "lora")
    loaded = load_scorer(ModelArguments(model_name_or_path=str(tmp_path / "lora"), dtype="float32"), tokenizer)
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, -2 * untouched, atol=1e-5)  # LoRA B starts at 0: head only


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--rollout_batch_size", "12"], "rollout_batch_size 12 / num_mini_batches 2 = 6 episodes per optimiser"),
        (["--kl_estimator", "k2"], "invalid choice: 'k2'"),
        (["--value_model_init", "random"], "invalid choice: 'random'"),
        (["--min_agreement", "0.5"], "method ppo has none"),
        (["--gamma", "0"], "gamma must be in (0, 1]"),
    ],
)
def test_a_ppo_recipe_that_cannot_make_a_run_fails_naming_it(overrides, message):
    with pytest.raises(RecipeError) as caught:
        parse_recipe(RECIPES / "ppo.yaml", overrides)
    assert message in str(caught.value)


def _model_state(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


@pytest.mark.slow
def test_a_killed_ppo_run_resumes_from_its_last_checkpoint(sqlite_engine, tmp_path, tiny_causal_lm, toy_reward):
    """SIGKILL a `launch.py train` subprocess once it has saved checkpoint-2, then --resume: the run finishes with
    the same policy as a run never interrupted, its logs holding each step once."""
    campaign = seed_campaign(sqlite_engine, tmp_path)
    saving = ["--save_strategy", "steps", "--save_steps", "2", "--report_to", "tensorboard"]
    whole = train(RECIPES / "ppo.yaml", _overrides(tmp_path, campaign, tiny_causal_lm, toy_reward, "ppo-whole",
                                                   "--max_steps", "6", *saving), engine=sqlite_engine)  # fmt: skip
    killed = _overrides(tmp_path, campaign, tiny_causal_lm, toy_reward, "ppo-killed", *saving)
    command = [sys.executable, str(ROOT / "launch.py"), "--database-url", str(sqlite_engine.url), "train",
               str(RECIPES / "ppo.yaml"), *killed, "--max_steps", "1000"]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    model_dir = tmp_path / "runs" / "ppo-killed" / "model"
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (model_dir / "checkpoint-2").is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
    assert sorted(p.name for p in model_dir.glob("checkpoint-*")) == ["checkpoint-2"]

    resumed = train(RECIPES / "ppo.yaml", [*killed, "--max_steps", "6"], engine=sqlite_engine, resume=True)

    assert resumed.status == "finished" and resumed.metrics["resumed_from"] == "checkpoint-2"
    assert resumed.metrics["train_steps"] == 6 and resumed.metrics["episodes"] == 6 * 16
    logged = [line for line in _jsonl(model_dir / "metrics.jsonl") if "score" in line]
    reference = [line for line in _jsonl(Path(whole.output_path) / "model" / "metrics.jsonl") if "score" in line]
    assert [line["step"] for line in logged] == [1, 2, 3, 4, 5, 6]
    for mine, theirs in zip(logged, reference, strict=True):
        assert mine["score"] == pytest.approx(theirs["score"], abs=1e-5), mine["step"]
    final, expected = _model_state(model_dir), _model_state(Path(whole.output_path) / "model")
    assert all(torch.allclose(final[name], expected[name], atol=1e-5) for name in expected)
    assert resumed.metrics["heldout_score"] == pytest.approx(whole.metrics["heldout_score"], abs=1e-5)
    assert list(model_dir.glob("runs/*/events.out.tfevents.*")), "no TensorBoard log under the run folder"


@pytest.mark.slow
def test_two_processes_run_one_ppo_run(tmp_path, tiny_causal_lm, toy_reward):
    """`accelerate launch` with two processes (gloo on CPU): each answers its own prompts, the gradients are averaged,
    and the main process alone writes the logs, the samples and the run's row."""
    url = f"sqlite:///{tmp_path / 'concord.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    campaign = seed_campaign(engine, tmp_path)
    recipe = [str(RECIPES / "ppo.yaml"), *_overrides(tmp_path, campaign, tiny_causal_lm, toy_reward, "ppo-ddp"),
              "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "2"]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
                        "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [*TWO_GLOO_PROCESSES, str(ROOT / "launch.py"), "--database-url", url, "train", *recipe]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with Session(engine) as session:
        runs = session.exec(select(TrainingRun)).all()
    engine.dispose()
    assert len(runs) == 1 and runs[0].status == "finished" and done.stdout.count("finished in") == 1
    assert runs[0].metrics["episodes"] == 3 * 16 * 2  # both processes' rollouts counted
    model_dir = Path(runs[0].output_path) / "model"
    assert [line["step"] for line in _jsonl(model_dir / "metrics.jsonl") if "score" in line] == [1, 2, 3]
    assert len(_jsonl(model_dir / "samples.jsonl")) == 8  # the main process's held-out answers, at 0 and 3
    assert (model_dir / "checkpoint-2" / "random_states_1.pkl").is_file()  # each process's RNG, for --resume
    AutoModelForCausalLM.from_pretrained(model_dir)
