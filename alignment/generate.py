"""``launch.py generate``: N candidate responses per prompt of a campaign from one or more models (local, or behind an
OpenAI-compatible endpoint: alignment.chat_models), stored as Response rows for ``launch.py pair``.

Multi-turn prompts (MT-bench's ``turns``, stored as consecutive user messages) are answered turn by turn: each later
user message is sent after the model's own answer to the one before. Such a response's text is every answer under a
``**Turn i**`` heading (what a rater compares), and ``generation_params["turns"]`` keeps the answers themselves.

Work goes in batches (``batch_size`` prompt x sample items), each written in its own transaction once its last turn
is answered: an interrupted run loses at most the batch in flight, and running the same command again skips every
(prompt, model, sample) the campaign holds (storage.candidates).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from sqlalchemy import Engine
from sqlmodel import Session
from tqdm.auto import tqdm

from alignment.chat_models import ChatModel, GenerationFailed, ModelSpec, Sampling, load_chat_model, parse_spec
from storage.campaigns import campaign_id_for, prompts_for
from storage.candidates import Candidate, add_candidates, audit_generation, stored_samples
from storage.db import write_session

log = logging.getLogger(__name__)

SEED_STRIDE = 1_000_003
"""A response's seed is ``seed + SEED_STRIDE * sample + prompt_id``: different for every prompt and sample."""


@dataclass
class GenerateArguments:
    """What ``launch.py generate`` asks for (its flags are these fields)."""

    campaign: str = field(metadata={"help": "Campaign whose prompts are answered."})
    models: list[str] = field(default_factory=list, metadata={"help": "Model specs (alignment.chat_models)."})
    n: int = field(default=1, metadata={"help": "Responses per prompt and model."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature; 0 is greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling's probability mass."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer to one turn, in tokens."})
    seed: int = field(default=0, metadata={"help": "Seeds every response (see SEED_STRIDE)."})
    batch_size: int = field(default=8, metadata={"help": "Items per batch (and concurrent endpoint requests)."})
    endpoint: str | None = field(default=None, metadata={"help": "Base URL serving models that name no URL."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file of local models that name none."})
    api_key_env: str | None = field(default=None, metadata={"help": "Variable holding the endpoint's key."})
    max_retries: int = field(default=4, metadata={"help": "Retries of a failed endpoint request."})
    timeout_s: float = field(default=120.0, metadata={"help": "Seconds an endpoint request may take."})
    dtype: str = field(default="auto", metadata={"help": "Local weights' dtype (auto: bfloat16 on GPU, else fp32)."})

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("name at least one model: --model SPEC")
        if self.n < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("--n, --batch-size and --max-new-tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"--temperature must be >= 0 and --top_p in (0, 1]; got {self.temperature}, {self.top_p}")
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be >= 0; got {self.max_retries}")
        self.specs = [parse_spec(m, endpoint=self.endpoint, gguf_file=self.gguf_file) for m in self.models]
        names = [spec.name for spec in self.specs]
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"two models are called {twice[0]!r}: name them apart, --model NAME=SPEC")

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.max_new_tokens)


@dataclass
class GenerationReport:
    campaign: str
    prompts: int = 0
    generated: dict[str, int] = field(default_factory=dict)  # model -> responses written by this run
    skipped: dict[str, int] = field(default_factory=dict)  # model -> responses the campaign held already

    def summary(self) -> str:
        """One paragraph for the command line."""
        held = self.skipped
        per_model = ", ".join(f"{m} {n} new ({held.get(m, 0)} held already)" for m, n in self.generated.items())
        return (f"Generated for campaign {self.campaign!r} ({self.prompts} prompts): {per_model}. "
                f"Pair them: launch.py pair --campaign {self.campaign} --strategy all-models")  # fmt: skip


def user_turns(messages: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The prompt cut before each user message that follows a user message: the messages sent at each turn."""
    turns: list[list[dict[str, str]]] = [[]]
    for previous, message in zip([None, *messages], messages, strict=False):
        if previous is not None and previous["role"] == message["role"] == "user":
            turns.append([])
        turns[-1].append(message)
    return turns


def converse(model: ChatModel, prompts: list[list[dict[str, str]]], seeds: list[int]) -> list[list[str]]:
    """Each prompt answered turn by turn, the model's own answers in the conversation: its answers per prompt."""
    pending = [user_turns(messages) for messages in prompts]
    history: list[list[dict[str, str]]] = [[] for _ in prompts]
    answers: list[list[str]] = [[] for _ in prompts]
    for turn in range(max(len(turns) for turns in pending)):
        asked = [i for i, turns in enumerate(pending) if turn < len(turns)]
        conversations = [history[i] + pending[i][turn] for i in asked]
        for i, conversation, text in zip(asked, conversations, model.reply(conversations, [seeds[i] for i in asked]),
                                         strict=True):  # fmt: skip
            history[i] = [*conversation, {"role": "assistant", "content": text}]
            answers[i].append(text)
    return answers


def response_text(answers: list[str]) -> str:
    """What a rater reads: the answer, or, for a multi-turn prompt, each turn's answer under its heading."""
    if len(answers) == 1:
        return answers[0]
    return "\n\n".join(f"**Turn {i}**\n\n{answer}" for i, answer in enumerate(answers, start=1))


def _candidates(spec: ModelSpec, model: ChatModel, batch: list[tuple[dict, int]], args: GenerateArguments):
    seeds = [args.seed + SEED_STRIDE * sample + prompt["prompt_id"] for prompt, sample in batch]
    answers = converse(model, [prompt["prompt"] for prompt, _ in batch], seeds)
    sampling = asdict(args.sampling) | {"seed": args.seed, "batch_size": args.batch_size}
    for (prompt, sample), seed, texts in zip(batch, seeds, answers, strict=True):
        params = {**sampling, "sample_seed": seed, **model.identity} | ({"turns": texts} if len(texts) > 1 else {})
        yield Candidate(prompt["prompt_id"], spec.name, sample, response_text(texts), params)


def _todo(engine: Engine, campaign_id: int, prompts: list[dict], spec: ModelSpec, n: int) -> list[tuple[dict, int]]:
    """(prompt, sample) items the campaign does not hold yet, sample by sample."""
    with Session(engine) as session:
        held = stored_samples(session=session, campaign_id=campaign_id, author=spec.name)
    return [(p, k) for k in range(n) for p in prompts if (p["prompt_id"], k) not in held]


def _generate_one(engine: Engine, campaign_id: int, prompts: list[dict], spec: ModelSpec, args: GenerateArguments,
                  report: GenerationReport) -> None:  # fmt: skip
    todo = _todo(engine, campaign_id, prompts, spec, args.n)
    total = len(prompts) * args.n
    report.skipped[spec.name], report.generated[spec.name] = total - len(todo), 0
    if not todo:
        log.info("%s: every response is there already", spec.name)
        return
    model = load_chat_model(spec, args.sampling, dtype=args.dtype, engine=engine, key_variable=args.api_key_env,
                            max_retries=args.max_retries, timeout_s=args.timeout_s,
                            concurrency=args.batch_size)  # fmt: skip
    with tqdm(total=total, initial=total - len(todo), desc=spec.name, unit="response") as bar:
        for start in range(0, len(todo), args.batch_size):
            candidates = list(_candidates(spec, model, todo[start : start + args.batch_size], args))
            with write_session(engine) as session, session.begin():
                written = add_candidates(session=session, campaign_id=campaign_id, candidates=candidates,
                                         source=f"generate {spec.name}")  # fmt: skip
            report.generated[spec.name] += written
            bar.update(len(candidates))


def generate(args: GenerateArguments, *, engine: Engine) -> GenerationReport:
    """Generate what the campaign lacks of ``args.n`` responses per prompt from each model; GenerationFailed (after
    writing every finished batch) when a model cannot go on."""
    with Session(engine) as session:
        campaign_id = campaign_id_for(session=session, name=args.campaign)
        prompts = prompts_for(session=session, campaign_id=campaign_id)
    if not prompts:
        raise ValueError(f"campaign {args.campaign!r} has no prompts to answer: import some first")
    report = GenerationReport(args.campaign, len(prompts))
    try:
        for spec in args.specs:
            _generate_one(engine, campaign_id, prompts, spec, args, report)
    except GenerationFailed as error:
        done = sum(report.generated.values())
        raise GenerationFailed(f"{error}\n{done} responses of this run are stored; run the same command again to "
                               "continue where it stopped.") from error  # fmt: skip
    finally:
        details = {"models": [asdict(spec) for spec in args.specs], "n": args.n, **asdict(args.sampling),
                   "seed": args.seed, "generated": report.generated}  # fmt: skip
        with write_session(engine) as session, session.begin():
            audit_generation(session=session, campaign=args.campaign, details=details)
    log.info(report.summary())
    return report
