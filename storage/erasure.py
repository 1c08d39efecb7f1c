"""Erasing a person's data on request, in one of two modes, with the exports and training runs it reached marked stale.

``remove`` deletes what the person made: their judgments, demonstrations, assignments, consents and campaign
memberships. ``anonymise`` keeps their judgments and demonstrations, reasoning text included, so agreement stays
measurable, but cuts every tie to the person: a new username and pseudonym, no password, no Hugging Face account,
no domains. In both modes the user row itself stays, deactivated and de-identified, because exports
(``created_by``), adjudications (``decided_by``) and audit events point at it; every session of the account ends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from storage import members
from storage.frontier import forget as forget_frontiers
from storage.models import (
    Assignment,
    AuditEvent,
    Campaign,
    CampaignMember,
    Consent,
    DeletionRequest,
    Demonstration,
    DemonstrationReview,
    ExportRecord,
    Judgment,
    LoginFailure,
    Role,
    TrainingRun,
    User,
    new_pseudonym,
    utcnow,
)
from storage.sessions import LOGIN_ACTIONS, revoke_sessions

MODES = ("remove", "anonymise")
UNUSABLE_PASSWORD = "!erased"  # not an argon2 hash: authenticate() refuses it


@dataclass(frozen=True)
class ErasureReport:
    user_id: int
    mode: str
    username: str  # the de-identified name the account now has
    deleted: dict[str, int]  # rows deleted, by table
    kept: dict[str, int]  # rows kept under the de-identified account (anonymise)
    stale_exports: list[int]  # ExportRecord ids that hold the person's data
    stale_runs: list[int]  # TrainingRun ids that learned from those exports
    opened_campaigns: list[str] = field(default_factory=list)  # closed campaigns whose only rater member this was
    request_id: int = 0  # the DeletionRequest row

    def summary(self) -> str:
        """One paragraph for the command line and the studio."""
        deleted = ", ".join(f"{n} {table}" for table, n in self.deleted.items()) or "nothing"
        kept = ", ".join(f"{n} {table}" for table, n in self.kept.items()) or "nothing"
        opened = f" Now open to every rater: {', '.join(self.opened_campaigns)}." if self.opened_campaigns else ""
        return (
            f"User {self.user_id} erased ({self.mode}) as {self.username!r}: deleted {deleted}; kept de-identified "
            f"{kept}; exports marked stale {self.stale_exports or 'none'}, training runs {self.stale_runs or 'none'}."
            f"{opened}"
        )


def user_id_of(*, session: Session, username: str) -> int:
    """The id of the user named ``username``; ValueError naming it when there is none."""
    user_id = session.exec(select(User.id).where(User.username == username)).first()
    if user_id is None:
        raise ValueError(f"no user named {username!r}")
    return user_id


def _delete_versioned(session: Session, model: type[Judgment] | type[Demonstration], user_id: int) -> int:
    """Delete the user's rows of an append-only table; links of the supersedes chains into them are cut first."""
    own = select(model.id).where(model.rater_id == user_id)
    session.execute(
        update(model).where(col(model.supersedes_id).in_(own)).values(supersedes_id=None),
        execution_options={"synchronize_session": False},
    )
    return session.execute(delete(model).where(model.rater_id == user_id)).rowcount


def _remove(session: Session, user_id: int) -> tuple[dict[str, int], list[str]]:
    """Delete what the user made and every link to a campaign; returns counts and the campaigns left open."""
    assigned = select(CampaignMember.campaign_id).where(
        CampaignMember.user_id == user_id, CampaignMember.role == Role.rater
    )
    rated = session.exec(select(Campaign).where(col(Campaign.id).in_(assigned))).all()
    own_demonstrations = select(Demonstration.id).where(Demonstration.rater_id == user_id)
    deleted = {
        "judgments": _delete_versioned(session, Judgment, user_id),
        "demonstration reviews": session.execute(
            delete(DemonstrationReview).where(col(DemonstrationReview.demonstration_id).in_(own_demonstrations))
        ).rowcount,
        "demonstrations": _delete_versioned(session, Demonstration, user_id),
        "assignments": session.execute(delete(Assignment).where(Assignment.rater_id == user_id)).rowcount,
        "consents": session.execute(delete(Consent).where(Consent.user_id == user_id)).rowcount,
        "memberships": session.execute(delete(CampaignMember).where(CampaignMember.user_id == user_id)).rowcount,
    }
    opened = [c.name for c in rated if not members.has_rater_members(session=session, campaign_id=c.id)]
    return deleted, opened


def _anonymise(session: Session, user_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """Keep what the user made; drop only their open leases, which hold no data and would block others' work."""
    leases = delete(Assignment).where(Assignment.rater_id == user_id, col(Assignment.closed_at).is_(None))
    kept = {
        "judgments": len(session.exec(select(Judgment.id).where(Judgment.rater_id == user_id)).all()),
        "demonstrations": len(session.exec(select(Demonstration.id).where(Demonstration.rater_id == user_id)).all()),
    }
    return {"open assignments": session.execute(leases).rowcount}, kept


def _de_identify(session: Session, user: User) -> None:
    old = user.username
    user.username, user.pseudonym, user.password_hash = f"erased-{user.id}", new_pseudonym(), UNUSABLE_PASSWORD
    user.hf_username, user.domains, user.active = None, [], False
    revoke_sessions(session=session, user=user)  # a browser still signed in as them gets nothing from now on
    # Sign-in records hold the addresses they came from: the events stay, the addresses and refused attempts go.
    session.execute(
        update(AuditEvent)
        .where(AuditEvent.target == old, col(AuditEvent.action).in_(LOGIN_ACTIONS))
        .values(details={}),
        execution_options={"synchronize_session": False},
    )
    session.execute(delete(LoginFailure).where(LoginFailure.username == old.lower()))
    # Audit events about the account name it: keep the events, drop the name.
    session.execute(
        update(AuditEvent)
        .where(AuditEvent.target == old, col(AuditEvent.action).startswith("user."))
        .values(target=user.username),
        execution_options={"synchronize_session": False},
    )


def _mark_stale(session: Session, user_id: int) -> tuple[list[int], list[int]]:
    """Exports holding the user's data (their rater_ids name them) and runs trained on them, marked stale."""
    exports = [e for e in session.exec(select(ExportRecord).order_by(ExportRecord.id)) if user_id in e.rater_ids]
    export_ids = {e.id for e in exports}
    runs = [r for r in session.exec(select(TrainingRun).order_by(TrainingRun.id)) if export_ids & set(r.export_ids)]
    for row in [*exports, *runs]:
        row.stale = True
    return [e.id for e in exports], [r.id for r in runs]


def erase_user(*, session: Session, user_id: int, mode: str, actor_id: int | None) -> ErasureReport:
    """Erase user ``user_id`` in ``mode`` ("remove" or "anonymise"; see the module), record a completed
    DeletionRequest and an AuditEvent, and mark stale the exports and runs that hold their data. Flushes only."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise ValueError(f"no user with id {user_id}")
    opened: list[str] = []
    if mode == "remove":
        (deleted, opened), kept = _remove(session, user_id), {}
        forget_frontiers(session=session)  # pairs this rater judged have room again
    else:
        deleted, kept = _anonymise(session, user_id)
    _de_identify(session, user)
    stale_exports, stale_runs = _mark_stale(session, user_id)
    request = DeletionRequest(user_id=user_id, mode=mode, requested_by=actor_id, completed_at=utcnow())
    session.add(request)
    session.flush()
    report = ErasureReport(
        user_id=user_id, mode=mode, username=user.username, deleted=deleted, kept=kept, stale_exports=stale_exports,
        stale_runs=stale_runs, opened_campaigns=opened, request_id=request.id,
    )  # fmt: skip
    details: dict[str, Any] = {k: v for k, v in asdict(report).items() if k not in ("user_id", "username")}
    session.add(AuditEvent(actor_id=actor_id, action="user.erase", target=user.username, details=details))
    session.flush()
    return report
