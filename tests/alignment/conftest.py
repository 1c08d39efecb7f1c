"""Tiny random models, a tokenizer trained here from a few sentences, a seeded campaign and a toy reward model: no
network.

The toy reward model is a real one-layer Llama sequence classifier, saved to a folder and loaded like any reward
model, whose weights are set by hand so that its score is exactly 4 f / sqrt(1 + f^2), f the fraction of the text's
tokens that contain the letter "e": its attention is uniform (zero queries and keys) and its values carry one bit per
token, whether the token is a target.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from sqlmodel import select
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from storage.db import write_session
from storage.imports import import_file
from storage.models import Demonstration, Prompt

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TOPICS = ["rivers", "volcanoes", "bread", "chess", "tides", "owls", "bridges", "comets", "honey", "glaciers",
          "violins", "deserts", "coral", "kites", "lanterns", "maple trees", "salt", "clocks", "whales",
          "moss"]  # fmt: skip

TWO_GLOO_PROCESSES = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                      "--main_process_port", "0"]  # fmt: skip
"""`accelerate launch` of two CPU processes (the recipes' use_cpu makes them a gloo group), before launch.py."""


def _sentences() -> list[str]:
    return [f"user assistant system Tell me about {t}. {t.capitalize()} are interesting and useful." for t in TOPICS]


def _tokenizer(**special) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>", "[SEP]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(_sentences(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", **special)


def tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama (hidden 32) and a ChatML tokenizer without generation markers, saved to ``folder``; its
    weights come from torch's global RNG. Also built by benchmarks/ppo.py."""
    tokenizer = _tokenizer(eos_token="<|im_end|>", chat_template=CHATML)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> str:
    """The tiny Llama policy (``tiny_llama``) in a folder."""
    return str(tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A 2-layer BERT (hidden 32) whose tokenizer, like all-MiniLM's, has SEP but no EOS and no chat template. Its
    weights are seeded: a fresh draw each run made the toy reward recipe's loss thresholds flaky."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    tokenizer = _tokenizer(sep_token="[SEP]")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def seed_campaign(engine, tmp_path, name: str = "tiny", n: int = 20) -> str:
    """A campaign of ``n`` TRL-format pairs with prior labels (chosen = A) and one demonstration per prompt."""
    path = tmp_path / f"{name}.jsonl"
    records = [{"prompt": [{"role": "user", "content": f"Tell me about {t}."}],
                "chosen": [{"role": "assistant", "content": f"{t.capitalize()} are interesting and useful."}],
                "rejected": [{"role": "assistant", "content": f"I do not know about {t}."}]}
               for t in TOPICS[:n]]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    import_file(path, engine=engine, campaign=name, fmt="trl", license="MIT")
    with write_session(engine) as session, session.begin():
        for prompt in session.exec(select(Prompt)).all():
            topic = prompt.messages[0]["content"].removeprefix("Tell me about ").rstrip(".")
            text = f"{topic.capitalize()} are interesting and useful."
            session.add(Demonstration(prompt_id=prompt.id, messages=[{"role": "assistant", "content": text}],
                                      source="test", license="MIT"))  # fmt: skip
    return name


SCALE = 4.0


def _toy_reward(folder: Path, tokenizer) -> Path:
    """The toy reward model (see the module docstring) for ``tokenizer``, saved to ``folder``. Also built by
    benchmarks/ppo.py."""
    hidden = 8
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=512, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-6)  # fmt: skip
    model = LlamaForSequenceClassification(config)
    targets = [i for token, i in tokenizer.get_vocab().items() if "e" in tokenizer.convert_tokens_to_string([token])]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0  # every token: a unit vector, on axis 1 for a target, else 0
        model.model.embed_tokens.weight[targets, 0], model.model.embed_tokens.weight[targets, 1] = 0.0, 1.0
        layer = model.model.layers[0]
        for norm in (layer.input_layernorm, layer.post_attention_layernorm, model.model.norm):
            norm.weight.fill_(1.0)
        layer.self_attn.v_proj.weight[1, 1] = 1.0  # the normed input is sqrt(hidden) x the unit vector
        layer.self_attn.o_proj.weight[2, 1] = 1 / math.sqrt(hidden)  # axis 2 = mean over the prefix = f
        model.score.weight[0, 2] = SCALE / math.sqrt(hidden)  # final norm: f sqrt(hidden) / sqrt(1 + f^2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def toy_reward(tmp_path_factory, tiny_causal_lm) -> str:
    """The toy reward model, sharing the tiny policy's tokenizer."""
    return str(_toy_reward(tmp_path_factory.mktemp("toy-reward"), AutoTokenizer.from_pretrained(tiny_causal_lm)))
