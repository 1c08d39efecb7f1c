"""PPO's roles and rollouts: policy, frozen reference, reward model (its own tokenizer), value model; sampling
responses to prompts and measuring them.

A prompt is left-padded and its response right-padded after its first EOS; every forward pass takes positions from
the attention mask, as generate does, so the recomputed log-probabilities are those the tokens were sampled from.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import AutoPeftModelForSequenceClassification, PeftModel, get_peft_model
from torch import Tensor, nn
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_layers import GenericForSequenceClassification
from trl import get_peft_config

from alignment.arguments import ModelArguments
from alignment.model import load_causal_lm, load_reward_model, load_tokenizer, reward_peft_config
from alignment.ppo_config import PPOArguments
from alignment.ppo_math import kl_estimate, response_mask, token_logprobs
from alignment.reward import left_truncate

log = logging.getLogger(__name__)


@dataclass
class Roles:
    """The models and tokenizers of a PPO run."""

    policy: PreTrainedModel  # trained (through LoRA adapters with use_peft)
    value: PreTrainedModel | None  # trained: a one-score sequence classifier whose head is read at every token
    reference: PreTrainedModel | None  # frozen; None with LoRA: the policy with its adapters disabled
    reward: PreTrainedModel  # frozen
    tokenizer: PreTrainedTokenizerBase  # the policy's
    reward_tokenizer: PreTrainedTokenizerBase

    @property
    def eos_token_ids(self) -> list[int]:
        """Every token that ends a response: the tokenizer's EOS and the generation config's."""
        ids = self.policy.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        return sorted({self.tokenizer.eos_token_id, *ids})


class PolicyAndValue(nn.Module):
    """The two trained models as one module, so one optimiser and one ``accelerator.prepare`` (DDP, DeepSpeed)
    cover both, and one forward gives the policy's logits and the value of every position."""

    def __init__(self, policy: PreTrainedModel, value: PreTrainedModel) -> None:
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        positions = position_ids(attention_mask)
        logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                             use_cache=False).logits  # fmt: skip
        return logits, token_values(self.value, input_ids, attention_mask)


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions counted over the real tokens only (left padding does not move them), as generate counts them."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _classifier_body(model: PreTrainedModel) -> GenericForSequenceClassification:
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    if not isinstance(inner, GenericForSequenceClassification):
        raise ValueError(
            f"a value model must read its text left to right, like the policy: {type(inner).__name__} does not "
            "(an encoder sees the whole response at every token); set value_model_init: policy"
        )
    return inner


def token_values(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The value of every position: the classifier's score head applied to each of its backbone's hidden states."""
    body = _classifier_body(model)
    backbone = getattr(body, body.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                      use_cache=False).last_hidden_state  # fmt: skip
    return body.score(hidden).squeeze(-1).float()


def load_scorer(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A one-score sequence classifier from a folder (a LoRA reward run: its adapter merged into its base)."""
    folder = Path(model_args.model_name_or_path)
    if not (folder / "adapter_config.json").is_file():
        return load_reward_model(model_args, tokenizer)
    model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, dtype=model_args.dtype)
    model = model.merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _value_model(args: PPOArguments, model_args: ModelArguments, reward_args: ModelArguments,
                 tokenizers: tuple[PreTrainedTokenizerBase, PreTrainedTokenizerBase]) -> PreTrainedModel:  # fmt: skip
    tokenizer, reward_tokenizer = tokenizers
    if args.value_model_init == "policy":  # the policy's backbone, with a new one-score head
        return load_scorer(dataclasses.replace(model_args, use_peft=False), tokenizer)
    if reward_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"value_model_init reward: the reward model {reward_args.model_name_or_path} has another tokenizer than "
            "the policy, so it cannot value each policy token; set value_model_init: policy"
        )
    value = load_scorer(reward_args, reward_tokenizer)
    _classifier_body(value)  # fails now, naming the fix, rather than at the first step
    return value


def _reward_args(args: PPOArguments, model_args: ModelArguments) -> ModelArguments:
    return dataclasses.replace(model_args, model_name_or_path=args.reward_model_path, gguf_file=None, use_peft=False,
                               load_in_4bit=False, load_in_8bit=False)  # fmt: skip


def load_roles(args: PPOArguments, model_args: ModelArguments) -> Roles:
    """The four models and two tokenizers of a PPO run (see ``Roles``)."""
    tokenizer = load_tokenizer(model_args)
    policy = load_causal_lm(model_args)
    reward_args = _reward_args(args, model_args)
    reward_tokenizer = load_tokenizer(reward_args)
    reward = load_scorer(reward_args, reward_tokenizer)
    value = _value_model(args, model_args, reward_args, (tokenizer, reward_tokenizer))
    reference = None if model_args.use_peft else copy.deepcopy(policy)
    if model_args.use_peft:
        policy = get_peft_model(policy, get_peft_config(model_args))
        value = get_peft_model(value, reward_peft_config(model_args, value))
    for frozen in (reference, reward):
        if frozen is not None:
            frozen.eval().requires_grad_(False)
    for trained in (policy, value):  # dropout would make the old and new log-probabilities differ for nothing
        for module in trained.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    log.info("PPO roles: policy %s, reward %s, value from the %s, reference %s", model_args.model_name_or_path,
             args.reward_model_path, args.value_model_init, "the policy without adapters" if reference is None
             else "a frozen copy of the policy")  # fmt: skip
    return Roles(policy, value, reference, reward, tokenizer, reward_tokenizer)


def load_trained_roles(args: PPOArguments, model_args: ModelArguments, folder: Path) -> Roles:
    """A finished run's roles for evaluation: the policy saved in ``folder`` (a LoRA adapter on the start point, or
    whole weights), the start point as reference, the reward model; no value model."""
    saved = dataclasses.replace(model_args, model_name_or_path=str(folder), gguf_file=None, use_peft=False,
                                load_in_4bit=False, load_in_8bit=False)  # fmt: skip
    start = load_causal_lm(model_args)
    if (folder / "adapter_config.json").is_file():  # the reference is the start under the adapter, as in training
        policy, reference = PeftModel.from_pretrained(start, str(folder)), None
    else:
        policy, reference = load_causal_lm(saved), start
    reward_args = _reward_args(args, model_args)
    reward_tokenizer = load_tokenizer(reward_args)
    reward = load_scorer(reward_args, reward_tokenizer)
    for frozen in (policy, reference, reward):
        if frozen is not None:
            frozen.eval().requires_grad_(False)
    return Roles(policy, None, reference, reward, load_tokenizer(saved), reward_tokenizer)


@dataclass
class Episodes:
    """One rollout batch on one process: prompts, responses and what was measured of them."""

    prompts: list[list[dict]]  # each prompt's messages
    query_ids: Tensor  # [batch, prompt tokens], left-padded
    query_mask: Tensor
    response_ids: Tensor  # [batch, response_length], padded after the first EOS
    mask: Tensor  # bool, the response tokens that count: up to and including the first EOS
    has_eos: Tensor  # bool [batch]
    texts: list[str]  # the responses, decoded
    logprobs: Tensor | None = None  # of the sampled tokens, at the sampling temperature
    ref_logprobs: Tensor | None = None
    values: Tensor | None = None
    scores: Tensor | None = None  # the reward model's, one per response

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.query_mask, self.mask.long()], dim=1)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], max_length: int
                   ) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Prompts through the policy's chat template (with the assistant's turn opened), cut from the left to
    ``max_length`` and left-padded: ids and attention mask."""
    special = set(tokenizer.all_special_ids)
    rows = []
    for messages in prompts:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        rows.append(left_truncate(ids["input_ids"], max_length, ids["input_ids"][0] in special))
    padded = tokenizer.pad({"input_ids": rows}, padding_side="left", return_tensors="pt")
    return padded["input_ids"], padded["attention_mask"]


@torch.no_grad()
def sample(roles: Roles, prompts: list[list[dict]], args: PPOArguments, device) -> Episodes:
    """Responses sampled from the policy at the run's temperature, in chunks of per_device_eval_batch_size, padded
    to response_length."""
    query_ids, query_mask = (t.to(device) for t in encode_prompts(roles.tokenizer, prompts, args.max_prompt_length))
    pad = roles.tokenizer.pad_token_id
    config = GenerationConfig(max_new_tokens=args.response_length, do_sample=True, temperature=args.temperature,
                              top_k=0, top_p=1.0, eos_token_id=roles.eos_token_ids, pad_token_id=pad)  # fmt: skip
    responses = []
    for start in range(0, len(prompts), args.per_device_eval_batch_size):
        rows = slice(start, start + args.per_device_eval_batch_size)
        out = roles.policy.generate(
            input_ids=query_ids[rows], attention_mask=query_mask[rows], generation_config=config
        )
        response = out[:, query_ids.shape[1] :]
        responses.append(nn.functional.pad(response, (0, args.response_length - response.shape[1]), value=pad))
    response_ids = torch.cat(responses)
    mask, has_eos = response_mask(response_ids, roles.eos_token_ids)
    response_ids = response_ids.masked_fill(~mask, pad)
    decode = roles.tokenizer.decode
    texts = [decode(ids[m], skip_special_tokens=True).strip() for ids, m in zip(response_ids, mask, strict=True)]
    return Episodes(prompts, query_ids, query_mask, response_ids, mask, has_eos, texts)


def response_logprobs(logits: Tensor, episodes_ids: Tensor, context: int, temperature: float) -> Tensor:
    """Log-probabilities of the response tokens (after ``context`` prompt tokens) from full-sequence logits."""
    return token_logprobs(logits[:, context - 1 : -1] / temperature, episodes_ids)


@torch.no_grad()
def measure(roles: Roles, episodes: Episodes, args: PPOArguments, values: bool = True) -> None:
    """Fill in the episodes' log-probabilities under the policy and the reference, values (when ``values``) and
    reward-model scores, in chunks of per_device_eval_batch_size."""
    context, chunk = episodes.query_ids.shape[1], args.per_device_eval_batch_size
    ids, attention = episodes.input_ids, episodes.attention_mask
    out = {"logprobs": [], "ref_logprobs": [], "values": []}
    for start in range(0, len(ids), chunk):
        rows = slice(start, start + chunk)
        response = episodes.response_ids[rows]
        logits = roles.policy(input_ids=ids[rows], attention_mask=attention[rows],
                              position_ids=position_ids(attention[rows]), use_cache=False).logits  # fmt: skip
        out["logprobs"].append(response_logprobs(logits, response, context, args.temperature))
        out["ref_logprobs"].append(_reference_logprobs(roles, ids[rows], attention[rows], response, context, args))
        if values:
            out["values"].append(token_values(roles.value, ids[rows], attention[rows])[:, context - 1 : -1])
    episodes.logprobs, episodes.ref_logprobs = torch.cat(out["logprobs"]), torch.cat(out["ref_logprobs"])
    episodes.values = torch.cat(out["values"]) if values else None
    episodes.scores = score(roles, episodes.prompts, episodes.texts, args, ids.device)


def answer(roles: Roles, prompts: list[list[dict]], args: PPOArguments, device, kl: bool = True
           ) -> tuple[Episodes, Tensor | None]:  # fmt: skip
    """The prompts answered and scored with sampling noise seeded by ``args.seed`` apart from any other random
    stream, so the same policy gives the same answers wherever it is called; and, with ``kl``, each answer's KL from
    the reference (k1 summed over its tokens)."""
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(args.seed)
        episodes = sample(roles, prompts, args, device)
    if not kl:
        episodes.scores = score(roles, prompts, episodes.texts, args, device)
        return episodes, None
    measure(roles, episodes, args, values=False)
    return episodes, (kl_estimate(episodes.logprobs, episodes.ref_logprobs, "k1") * episodes.mask).sum(1)


def _reference_logprobs(roles: Roles, ids, attention, response, context: int, args: PPOArguments) -> Tensor:
    kwargs = {"input_ids": ids, "attention_mask": attention, "position_ids": position_ids(attention),
              "use_cache": False}  # fmt: skip
    if roles.reference is not None:
        return response_logprobs(roles.reference(**kwargs).logits, response, context, args.temperature)
    with roles.policy.disable_adapter():  # LoRA: the reference is the base under the adapters
        return response_logprobs(roles.policy(**kwargs).logits, response, context, args.temperature)


def score(roles: Roles, prompts: list[list[dict]], texts: list[str], args: PPOArguments, device) -> Tensor:
    """The reward model's score of each prompt and response (``reward_scores``)."""
    return reward_scores(roles.reward, roles.reward_tokenizer, prompts, texts, args.reward_max_length,
                         args.per_device_eval_batch_size, device)  # fmt: skip


@torch.no_grad()
def reward_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]],
                  texts: list[str], max_length: int | None, batch_size: int, device) -> Tensor:  # fmt: skip
    """A reward model's score of each prompt and response, rendered with the reward model's own chat template and
    cut from the left to ``max_length``, as reward training rendered and cut its pairs."""
    special = set(tokenizer.all_special_ids)
    rows = []
    for messages, text in zip(prompts, texts, strict=True):
        dialogue = [*messages, {"role": "assistant", "content": text}]
        ids = tokenizer.apply_chat_template(dialogue, tokenize=True, return_dict=True)["input_ids"]
        rows.append(ids if max_length is None else left_truncate(ids, max_length, ids[0] in special))
    scores = []
    for start in range(0, len(rows), batch_size):
        batch = tokenizer.pad({"input_ids": rows[start : start + batch_size]}, return_tensors="pt").to(device)
        scores.append(model(**batch).logits[:, 0].float())
    return torch.cat(scores)
