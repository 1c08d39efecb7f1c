"""Pairs formed from a campaign's stored responses (``launch.py pair``): which models meet on which prompts.

Strategies, per prompt, between responses of two different producers (``Response.author``):

- ``all-models``: every pairing of the models that answered it; a model with several responses (samples) meets
  another's i-th response with its own i-th;
- ``vs-reference``: every other model against the reference model, the same way;
- ``random-k``: ``k`` pairings per prompt, each time those with the fewest pairs so far (ties drawn with ``seed``), so
  every pairing ends up with about as many pairs as any other.

Within a pairing the models take side A in turn (the first side drawn with ``seed``), so neither sits on A more than
once more than the other. Two responses whose texts are the same (ignoring surrounding whitespace) are never paired.
A pair the campaign holds already (the same prompt, texts and producers: ``storage.formats.pair_hash``) is not
formed again, and it counts toward ``k`` and the side balance: a second run adds nothing.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from storage.formats_records import pair_hash
from storage.models import AuditEvent, Campaign, CampaignKind, Pair, Prompt, Response, utcnow

log = logging.getLogger(__name__)

STRATEGIES = ("all-models", "vs-reference", "random-k")


@dataclass
class PairingReport:
    campaign: str
    strategy: str
    models: list[str] = field(default_factory=list)  # producers with responses in the campaign
    prompts: int = 0  # prompts answered by two or more of them
    created: int = 0
    existing: int = 0  # pairs the strategy asked for that the campaign already held
    identical_skipped: int = 0  # candidate pairs whose two texts are the same
    by_pairing: dict[str, int] = field(default_factory=dict)  # "m1 vs m2" -> pairs created

    def summary(self) -> str:
        """One paragraph for the command line."""
        text = (
            f"Paired campaign {self.campaign!r} ({self.strategy}): {self.created} pairs created over {self.prompts} "
            f"prompts and {len(self.models)} models; {self.existing} already there, {self.identical_skipped} skipped "
            "for identical texts."
        )
        if self.by_pairing:
            text += " By pairing: " + ", ".join(f"{name} {n}" for name, n in sorted(self.by_pairing.items())) + "."
        return text


@dataclass(frozen=True)
class _Response:
    id: int
    prompt_id: int
    model: str
    text: str
    license: str | None


def _check(strategy: str, reference: str | None, k: int | None, models: list[str]) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if strategy == "vs-reference" and reference not in models:
        known = ", ".join(models) or "none"
        raise ValueError(f"vs-reference needs --reference, one of the campaign's models ({known}); got {reference!r}")
    if strategy == "random-k" and (k is None or k < 1):
        raise ValueError(f"random-k needs --k, a number of pairs per prompt of at least 1; got {k!r}")


def _responses(session: Session, campaign_id: int) -> dict[int, dict[str, list[_Response]]]:
    """prompt id -> model -> its responses in id order."""
    query = (
        select(Response.id, Response.prompt_id, Response.author, Response.text, Response.license)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .where(Prompt.campaign_id == campaign_id)
        .order_by(Response.id)
    )
    grouped: dict[int, dict[str, list[_Response]]] = defaultdict(lambda: defaultdict(list))
    for row in session.execute(query):
        grouped[row.prompt_id][row.author].append(_Response(*row))
    return grouped


def _existing(session: Session, campaign_id: int) -> tuple[set[str], Counter, Counter, Counter]:
    """The campaign's pair hashes; pairs per (prompt, pairing) and per pairing; pairs per (pairing, model on A)."""
    a, b = aliased(Response), aliased(Response)
    query = (
        select(Pair.prompt_id, Pair.content_hash, a.author, b.author)
        .join(a, a.id == Pair.response_a_id)
        .join(b, b.id == Pair.response_b_id)
        .where(Pair.campaign_id == campaign_id)
    )
    hashes, per_prompt, per_pairing, on_a = set(), Counter(), Counter(), Counter()
    for prompt_id, content_hash, model_a, model_b in session.execute(query):
        hashes.add(content_hash)
        if model_a != model_b:
            pairing = tuple(sorted((model_a, model_b)))
            per_prompt[prompt_id, pairing] += 1
            per_pairing[pairing] += 1
            on_a[pairing, model_a] += 1
    return hashes, per_prompt, per_pairing, on_a


def _candidates(models: dict[str, list[_Response]], pairings: list[tuple[str, str]]) -> list[list[tuple]]:
    """For each pairing, its candidate (x, y) response pairs: the i-th response of each model together."""
    return [list(zip(models[x], models[y], strict=False)) for x, y in pairings]


def _pairings(strategy: str, models: list[str], reference: str | None) -> list[tuple[str, str]]:
    if strategy == "vs-reference":
        return [tuple(sorted((reference, other))) for other in models if other != reference and reference in models]
    return list(itertools.combinations(sorted(models), 2))


class _Planner:
    """Chooses the pairs and their sides, remembering what the campaign holds."""

    def __init__(self, session: Session, campaign_id: int, seed: int, report: PairingReport) -> None:
        self.hashes, self.per_prompt, self.per_pairing, self.on_a = _existing(session, campaign_id)
        self.rng, self.report, self.rows = random.Random(seed), report, []
        hashes = select(Prompt.id, Prompt.content_hash).where(Prompt.campaign_id == campaign_id)
        self.prompt_hashes = dict(session.execute(hashes).all())

    def add(self, pairing: tuple[str, str], x: _Response, y: _Response) -> bool:
        """Form the pair of ``x`` and ``y`` unless identical or held already; True when the campaign holds it now."""
        if x.text.strip() == y.text.strip():
            self.report.identical_skipped += 1
            return False
        content_hash = pair_hash(self.prompt_hashes[x.prompt_id], x.text, y.text, x.model, y.model)
        if content_hash in self.hashes:
            self.report.existing += 1
            return True
        x_times, y_times = self.on_a[pairing, x.model], self.on_a[pairing, y.model]
        x_on_a = x_times < y_times or (x_times == y_times and self.rng.random() < 0.5)
        a, b = (x, y) if x_on_a else (y, x)
        self.on_a[pairing, a.model] += 1
        self.per_pairing[pairing] += 1
        self.per_prompt[x.prompt_id, pairing] += 1
        self.hashes.add(content_hash)
        self.rows.append((a, b, content_hash))
        name = f"{pairing[0]} vs {pairing[1]}"
        self.report.by_pairing[name] = self.report.by_pairing.get(name, 0) + 1
        return True

    def every(self, models: dict[str, list[_Response]], pairings: list[tuple[str, str]]) -> None:
        for pairing, candidates in zip(pairings, _candidates(models, pairings), strict=True):
            for x, y in candidates:
                self.add(pairing, x, y)

    def some(self, prompt_id: int, models: dict[str, list[_Response]], pairings: list[tuple], k: int) -> None:
        """Up to ``k`` pairings on this prompt, counting those it has; the least-paired pairings first."""
        have = sum(self.per_prompt[prompt_id, pairing] > 0 for pairing in pairings)
        open_ = [(p, c) for p, c in zip(pairings, _candidates(models, pairings), strict=True)
                 if not self.per_prompt[prompt_id, p]]  # fmt: skip
        self.rng.shuffle(open_)
        open_.sort(key=lambda item: self.per_pairing[item[0]])  # stable: the shuffle breaks ties
        for pairing, candidates in open_:
            if have >= k:
                return
            have += any(self.add(pairing, x, y) for x, y in candidates)


def form_pairs(
    *, session: Session, campaign_id: int, strategy: str, reference: str | None = None, k: int | None = None,
    seed: int = 0, evaluation: bool = False, actor_id: int | None = None,
) -> PairingReport:  # fmt: skip
    """Form the campaign's pairs from its stored responses by ``strategy`` (see the module); flushes, never commits.
    ``evaluation`` makes the campaign a blind evaluation (kind ``evaluation``)."""
    campaign = session.get(Campaign, campaign_id)
    grouped = _responses(session, campaign_id)
    models = sorted({model for by_model in grouped.values() for model in by_model})
    _check(strategy, reference, k, models)
    report = PairingReport(campaign.name, strategy, models)
    planner = _Planner(session, campaign_id, seed, report)
    for prompt_id in sorted(grouped):
        by_model = grouped[prompt_id]
        pairings = _pairings(strategy, sorted(by_model), reference)
        report.prompts += len(by_model) > 1
        if strategy == "random-k":
            planner.some(prompt_id, by_model, pairings, k)
        else:
            planner.every(by_model, pairings)
    now = utcnow()
    session.add_all(
        Pair(campaign_id=campaign_id, prompt_id=a.prompt_id, response_a_id=a.id, response_b_id=b.id,
             content_hash=content_hash, source=f"pair {strategy}", created_at=now,
             license=a.license if a.license == b.license else None)
        for a, b, content_hash in planner.rows
    )  # fmt: skip
    if evaluation:
        campaign.kind = CampaignKind.evaluation
    elif planner.rows and campaign.kind == CampaignKind.demonstration:
        campaign.kind = CampaignKind.both  # raters see pairs only where the campaign asks for judgments
    report.created = len(planner.rows)
    details = {"strategy": strategy, "reference": reference, "k": k, "seed": seed, "created": report.created}
    session.add(AuditEvent(actor_id=actor_id, action="pair", target=campaign.name, details=details))
    session.flush()
    log.info(report.summary())
    return report
