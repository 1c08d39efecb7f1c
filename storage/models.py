"""SQLModel tables and schemas: everything raters and engineers produce.

Families follow the house style: ``FooBase`` holds the shared fields, ``FooCreate`` validates input,
``Foo(table=True)`` is the row. Table models do not validate on construction (SQLModel skips it), so
input always goes through a ``*Create`` schema first.

Judgments and demonstrations are append-only: an edit is a new row whose ``supersedes_id`` names the
row it replaces; nothing is updated in place.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import field_validator
from sqlalchemy import JSON, Column, Index, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

PREFERENCE_SCALE = (-2, -1, 0, 1, 2)
"""-2 A much better, -1 A better, 0 tie, 1 B better, 2 B much better."""


def utcnow() -> datetime:
    """Timezone-aware UTC: SQLModel's datetime type stores it the same way on every engine."""
    return datetime.now(UTC)


def new_pseudonym() -> str:
    return "rater-" + secrets.token_hex(5)


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSON, nullable=False), **kw)


class Role(StrEnum):
    rater = "rater"
    lead = "lead"
    admin = "admin"
    excluded = "excluded"  # of a campaign member only: a rater a lead took off the campaign's work (storage.members)


ACCOUNT_ROLES = (Role.rater, Role.lead, Role.admin)


class CampaignKind(StrEnum):
    preference = "preference"
    demonstration = "demonstration"
    both = "both"
    evaluation = "evaluation"  # blind comparisons of models' responses: judged like preference pairs, then rated


class CalibrationMode(StrEnum):
    training = "training"  # the rater sees the expected answer and explanation after submitting
    audit = "audit"  # the rater sees nothing


class CalibrationKind(StrEnum):
    factual_priority = "factual_priority"
    sycophancy_trap = "sycophancy_trap"
    safety = "safety"
    instruction_following = "instruction_following"
    repeat = "repeat"


class Side(StrEnum):
    a = "a"
    b = "b"


class ClaimStatus(StrEnum):
    verified = "verified"
    unverifiable = "unverifiable"
    false = "false"


class QueueOrder(StrEnum):
    """Which open pair a rater gets first: import order, or what the campaign's reward model would learn most from."""

    fifo = "fifo"
    uncertainty = "uncertainty"  # the smallest predicted margin first
    disagreement = "disagreement"  # judged pairs whose consensus the reward model disputes first, then uncertainty


class TaskKind(StrEnum):
    judgment = "judgment"
    demonstration = "demonstration"


class ReviewStatus(StrEnum):
    accepted = "accepted"
    rejected = "rejected"


# --- users -----------------------------------------------------------------------------------------


class UserBase(SQLModel):
    username: str = Field(index=True, sa_column_kwargs={"unique": True}, max_length=64)
    role: Role = Field(default=Role.rater, sa_type=String(16))
    domains: list[str] = _json(default_factory=list)
    active: bool = True


class UserCreate(UserBase):
    password: str = Field(min_length=8)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError("username may hold letters, digits, '-', '_' and '.' only")
        return value


class User(UserBase, table=True):
    __table_args__ = (UniqueConstraint("hf_username", name="uq_user_hf_username"),)
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str
    pseudonym: str = Field(default_factory=new_pseudonym, sa_column_kwargs={"unique": True}, max_length=32)
    hf_username: str | None = Field(default=None, max_length=96)  # the Hugging Face account (OAuth on Spaces)
    created_at: datetime = Field(default_factory=utcnow)
    # Bumped to end every session of the account at once (storage.sessions.revoke_sessions): a session is valid only
    # while the epoch it was opened under is still the account's.
    session_epoch: int = 0
    # Set by an admin's reset (and on accounts an admin creates): the password was shown to someone else, so the
    # next sign-in must choose a new one before any session opens (studio.access.Service.log_in).
    must_change_password: bool = False


class UserPublic(UserBase):
    id: int
    pseudonym: str
    hf_username: str | None = None


# --- campaigns, prompts, responses, pairs ----------------------------------------------------------


class CampaignBase(SQLModel):
    name: str = Field(max_length=128)
    kind: CampaignKind = Field(default=CampaignKind.preference, sa_type=String(16))
    guidelines: str = Field(default="", sa_type=Text)
    rubric: list[str] = _json(default_factory=lambda: ["helpfulness", "honesty", "harmlessness"])
    overlap_k: int = Field(default=3, ge=1, le=50)
    calibration_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    calibration_mode: CalibrationMode = Field(default=CalibrationMode.training, sa_type=String(16))
    min_reasoning_chars: int = Field(default=20, ge=0)
    domains: list[str] = _json(default_factory=list)
    consent_text: str = Field(default="", sa_type=Text)
    # A rater whose accuracy over their last `calibration_window` calibration items falls below the threshold is
    # flagged; with `probation` on they then see only calibration items until they pass again.
    calibration_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    calibration_window: int = Field(default=20, ge=1)
    probation: bool = True
    criteria_required: bool = False  # every rubric criterion must be scored: an unrated one refuses the submit
    queue_order: QueueOrder = Field(default=QueueOrder.fifo, sa_type=String(16))


class CampaignCreate(CampaignBase):
    pass


class CampaignUpdate(SQLModel):
    """The fields a lead may change; those left None stay as they are."""

    kind: CampaignKind | None = None
    guidelines: str | None = None
    rubric: list[str] | None = None
    overlap_k: int | None = Field(default=None, ge=1, le=50)
    calibration_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    calibration_mode: CalibrationMode | None = None
    min_reasoning_chars: int | None = Field(default=None, ge=0)
    domains: list[str] | None = None
    consent_text: str | None = None
    calibration_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    calibration_window: int | None = Field(default=None, ge=1)
    probation: bool | None = None
    criteria_required: bool | None = None
    queue_order: QueueOrder | None = None


class Campaign(CampaignBase, table=True):
    __table_args__ = (UniqueConstraint("name", name="uq_campaign_name"),)
    id: int | None = Field(default=None, primary_key=True)
    guidelines_version: int = 1
    consent_version: int = 1
    queue_frontier: int = 0  # no regular pair below this id has room (storage.frontier); 0 when unknown
    created_at: datetime = Field(default_factory=utcnow)


class CampaignPublic(CampaignBase):
    id: int
    guidelines_version: int
    consent_version: int
    created_at: datetime


class Provenance(SQLModel):
    """Where an imported row came from; kept on every row."""

    source: str = Field(default="studio", max_length=256)
    license: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


class Prompt(Provenance, table=True):
    __table_args__ = (UniqueConstraint("campaign_id", "content_hash", name="uq_prompt_content"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    messages: list[dict[str, Any]] = _json()  # [{"role": "user"|"assistant"|"system", "content": str}]
    domain: str | None = Field(default=None, max_length=64)
    content_hash: str = Field(max_length=64)


class Response(Provenance, table=True):
    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    text: str = Field(sa_type=Text)
    author: str = Field(default="unknown", max_length=128)  # model name, or a human's pseudonym
    generation_params: dict[str, Any] = _json(default_factory=dict)
    prior_label: bool | None = None  # desirable (True) or not, known at import time: an unpaired KTO example


class Pair(Provenance, table=True):
    __table_args__ = (UniqueConstraint("campaign_id", "content_hash", name="uq_pair_content"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    response_a_id: int = Field(foreign_key="response.id")
    response_b_id: int = Field(foreign_key="response.id")
    prior_preference: int | None = None  # a label known at import time, on the same -2..2 scale
    content_hash: str = Field(max_length=64)


# --- judgments and demonstrations (append-only) ----------------------------------------------------


class JudgmentBase(SQLModel):
    pair_id: int = Field(foreign_key="pair.id")
    preference: int = Field(ge=-2, le=2)
    both_bad: bool = False
    criteria: dict[str, int] = _json(default_factory=dict)  # rubric criterion -> score 1..5
    reasoning: str = Field(default="", sa_type=Text)
    confidence: int = Field(default=3, ge=1, le=5)
    left: Side = Field(sa_type=String(1))  # which response was shown on the left
    time_on_task_s: float = Field(default=0.0, ge=0.0)
    client_time: datetime | None = None
    supersedes_id: int | None = Field(default=None, foreign_key="judgment.id")

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, value: dict[str, int]) -> dict[str, int]:
        for name, score in value.items():
            if not isinstance(score, int) or not 1 <= score <= 5:
                raise ValueError(f"criterion {name!r} must be scored 1 to 5, got {score!r}")
        return value


class JudgmentCreate(JudgmentBase):
    pass


class Judgment(JudgmentBase, table=True):
    __table_args__ = (
        Index("ix_judgment_pair", "pair_id"),
        Index("ix_judgment_rater", "rater_id"),
        Index("ix_judgment_supersedes", "supersedes_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    rater_id: int = Field(foreign_key="user.id")
    guideline_version: int
    server_time: datetime = Field(default_factory=utcnow)


class Claim(SQLModel):
    """One factual claim of a demonstration and how the rater verified it."""

    claim: str = Field(min_length=1)
    status: ClaimStatus
    source: str | None = None


class DemonstrationBase(SQLModel):
    prompt_id: int = Field(foreign_key="prompt.id")
    messages: list[dict[str, Any]] = _json()  # the written response, as assistant message(s)
    draft_response_id: int | None = Field(default=None, foreign_key="response.id")
    claims: list[dict[str, Any]] = _json(default_factory=list)  # Claim dicts
    time_on_task_s: float = Field(default=0.0, ge=0.0)
    paste_events: list[dict[str, Any]] = _json(default_factory=list)  # [{"at": iso, "chars": n}]
    client_time: datetime | None = None
    supersedes_id: int | None = Field(default=None, foreign_key="demonstration.id")


class DemonstrationCreate(DemonstrationBase):
    @field_validator("claims")
    @classmethod
    def _claims(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [Claim.model_validate(c).model_dump(mode="json") for c in value]


class Demonstration(DemonstrationBase, Provenance, table=True):
    __table_args__ = (
        Index("ix_demonstration_prompt", "prompt_id"),
        Index("ix_demonstration_rater", "rater_id"),
        Index("ix_demonstration_supersedes", "supersedes_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    rater_id: int | None = Field(default=None, foreign_key="user.id")  # None for imported human writing
    guideline_version: int | None = None


class Adjudication(SQLModel, table=True):
    """A lead's final decision on a disagreed pair; the newest one per pair overrides the raters' consensus."""

    id: int | None = Field(default=None, primary_key=True)
    pair_id: int = Field(foreign_key="pair.id", index=True)
    preference: int = Field(ge=-2, le=2)
    both_bad: bool = False
    note: str = Field(default="", sa_type=Text)
    decided_by: int | None = Field(default=None, foreign_key="user.id")
    decided_at: datetime = Field(default_factory=utcnow)


class DemonstrationReview(SQLModel, table=True):
    """A lead's verdict on one version of a demonstration; the newest per demonstration counts. A revision is a new
    demonstration row, so it starts unreviewed. SFT exports take accepted ones (storage.export.sft_rows)."""

    id: int | None = Field(default=None, primary_key=True)
    demonstration_id: int = Field(foreign_key="demonstration.id", index=True)
    status: ReviewStatus = Field(sa_type=String(16))
    note: str = Field(default="", sa_type=Text)
    reviewer_id: int | None = Field(default=None, foreign_key="user.id")
    reviewed_at: datetime = Field(default_factory=utcnow)


# --- calibration and work assignment ---------------------------------------------------------------


class CalibrationItemBase(SQLModel):
    pair_id: int = Field(foreign_key="pair.id")
    expected: int = Field(ge=-2, le=2)
    accepted: list[int] = _json(default_factory=list)  # every preference that counts as correct
    kind: CalibrationKind = Field(sa_type=String(32))
    explanation: str = Field(default="", sa_type=Text)

    @field_validator("accepted")
    @classmethod
    def _accepted(cls, value: list[int]) -> list[int]:
        if any(v not in PREFERENCE_SCALE for v in value):
            raise ValueError(f"accepted answers must lie on the scale {PREFERENCE_SCALE}, got {value}")
        return sorted(set(value))


class CalibrationItemCreate(CalibrationItemBase):
    pass


class CalibrationItem(CalibrationItemBase, table=True):
    __table_args__ = (UniqueConstraint("pair_id", name="uq_calibration_pair"),)
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)


class Assignment(SQLModel, table=True):
    """A lease: the rater holds the item until ``expires_at``; leases count toward an item's ``k``."""

    __table_args__ = (
        Index("ix_assignment_open", "rater_id", "closed_at"),
        # A campaign's open leases, for the queue; partial, so that no query about closed ones is drawn to it.
        Index(
            "ix_assignment_campaign_open",
            "campaign_id",
            sqlite_where=text("closed_at IS NULL"),
            postgresql_where=text("closed_at IS NULL"),
        ),  # fmt: skip
        Index("ix_assignment_pair", "pair_id"),
        Index("ix_assignment_prompt", "prompt_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    rater_id: int = Field(foreign_key="user.id")
    task: TaskKind = Field(sa_type=String(16))
    pair_id: int | None = Field(default=None, foreign_key="pair.id")
    prompt_id: int | None = Field(default=None, foreign_key="prompt.id")
    left: Side | None = Field(default=None, sa_type=String(1))
    is_calibration: bool = False
    leased_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    closed_at: datetime | None = None


class CampaignMember(SQLModel, table=True):
    """Who works on a campaign: raters assigned to it and the leads who run it.

    A campaign with no rater members is open to every active rater (the demo campaign is); once a lead assigns
    raters, only they see it.
    """

    __table_args__ = (UniqueConstraint("campaign_id", "user_id", name="uq_campaign_member"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    role: Role = Field(default=Role.rater, sa_type=String(16))  # rater | lead | excluded
    added_at: datetime = Field(default_factory=utcnow)


class Consent(SQLModel, table=True):
    """A rater accepted this version of a campaign's consent text; a new version asks again."""

    __table_args__ = (UniqueConstraint("user_id", "campaign_id", "version", name="uq_consent"),)
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    version: int
    at: datetime = Field(default_factory=utcnow)


# --- governance ------------------------------------------------------------------------------------


class AuditEvent(SQLModel, table=True):
    """One privileged action: import, export, deletion, role change."""

    id: int | None = Field(default=None, primary_key=True)
    actor_id: int | None = Field(default=None, foreign_key="user.id")  # None: the command line
    action: str = Field(max_length=64, index=True)
    target: str = Field(default="", max_length=256)
    details: dict[str, Any] = _json(default_factory=dict)
    at: datetime = Field(default_factory=utcnow)


class ExportRecord(SQLModel, table=True):
    """What went into one export, so a trained model can be traced back to its judgments."""

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    kind: str = Field(max_length=16)
    filters: dict[str, Any] = _json(default_factory=dict)
    out_path: str = Field(default="", max_length=1024)
    row_count: int = 0
    pair_ids_sha256: str = Field(default="", max_length=64)
    judgment_ids_sha256: str = Field(default="", max_length=64)
    demonstration_ids_sha256: str = Field(default="", max_length=64)
    rater_ids: list[int] = _json(default_factory=list)
    guideline_versions: list[int] = _json(default_factory=list)
    stale: bool = False  # set when data it holds was erased
    created_by: int | None = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class TrainingRun(SQLModel, table=True):
    """One training run, linked to the exports it learned from: lineage from a model back to its judgments."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, sa_column_kwargs={"unique": True})
    method: str = Field(max_length=16)  # sft | reward | dpo | kto | ...
    export_ids: list[int] = _json(default_factory=list)  # ExportRecord ids; empty when trained from a dataset name
    data_source: str = Field(default="", max_length=1024)  # campaign name, dataset folder or datasets name
    recipe: dict[str, Any] = _json(default_factory=dict)  # the resolved configuration
    recipe_path: str = Field(default="", max_length=1024)
    code_version: str = Field(default="", max_length=64)
    output_path: str = Field(default="", max_length=1024)
    status: str = Field(default="running", max_length=16)  # running | finished | failed
    metrics: dict[str, Any] = _json(default_factory=dict)
    stale: bool = False  # set when data it learned from was erased
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class PairScore(SQLModel, table=True):
    """A reward model's scores of a pair's two responses (alignment.score): for active selection, for a reward model
    judging an evaluation campaign, and for finding likely label errors."""

    __table_args__ = (UniqueConstraint("pair_id", "run_id", name="uq_pairscore_pair_run"),)
    id: int | None = Field(default=None, primary_key=True)
    pair_id: int = Field(foreign_key="pair.id", index=True)
    run_id: int = Field(foreign_key="trainingrun.id", index=True)
    score_a: float
    score_b: float
    margin_std: float = 0.0  # spread of score_a - score_b over MC-dropout samples; 0 without them
    scored_at: datetime = Field(default_factory=utcnow)


class ImportJob(SQLModel, table=True):
    """An import being written (storage.imports, storage.staging): its rows wait in ``campaign_id``, a staging
    campaign hidden from every list, rater and lead, and reach the campaign named ``target`` only once the last of
    them is written. ``state`` is ``writing`` (a failure or crash discards them) or ``moving`` (committed: a crash
    is finished by the next import). ``beat_at`` is when the job last made progress."""

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", sa_column_kwargs={"unique": True})
    target: str = Field(max_length=128)
    state: str = Field(default="writing", max_length=16)
    actor_id: int | None = None  # who imported (None: the command line); audited when the import is published
    report: dict[str, Any] = _json(default_factory=dict)  # storage.imports.ImportReport, for the audit event
    started_at: datetime = Field(default_factory=utcnow)
    beat_at: datetime = Field(default_factory=utcnow)


class LoginSession(SQLModel, table=True):
    """A signed-in browser or API client. The row holds a keyed hash of the cookie's token, never the token, and is
    bound to the account id and the account's ``session_epoch`` at sign-in (see storage.sessions)."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    user_id: int = Field(foreign_key="user.id", index=True)
    epoch: int
    address: str = Field(default="", max_length=64)  # the client address it signed in from
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class LoginFailure(SQLModel, table=True):
    """One refused password, for the login throttle: counted per account name and per client address."""

    __table_args__ = (
        Index("ix_loginfailure_username_at", "username", "at"),
        Index("ix_loginfailure_address_at", "address", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64)  # as typed, lowercased: unknown names count as known ones do
    address: str = Field(max_length=64)
    at: datetime = Field(default_factory=utcnow)
    cleared: bool = False  # a later sign-in to the account took it off the account's count, never the address's


class DeletionRequest(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    mode: str = Field(default="anonymise", max_length=16)  # "remove" | "anonymise"
    requested_by: int | None = Field(default=None, foreign_key="user.id")
    requested_at: datetime = Field(default_factory=utcnow)
    completed_at: datetime | None = None
