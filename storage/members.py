"""Who may work on or run which campaign: campaign membership and consent, as queries, and membership changes.

A lead may *exclude* a rater from a campaign (a member whose role is ``excluded``): they may no longer work on it,
and their judgments of it leave its exports and model evaluation and stop counting toward its overlap k, so the pairs
they judged go back to the queue for others (storage.queue, storage.frontier, storage.export, storage.frames). The
judgments stay in the database (the quality report still shows the rater); taking the member off the campaign lets
them count again. Their demonstrations stay and export as a lead's review decides; those no lead accepted stop
holding their prompts' places, so the prompts go back to the queue (storage.demonstrations.holding_a_place).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, case, delete, exists
from sqlmodel import Session, col, select

from storage.models import Assignment, AuditEvent, Campaign, CampaignMember, Consent, ImportJob, Role, User

_LIVE = ~exists().where(ImportJob.campaign_id == Campaign.id)
"""Not an import's staging campaign (storage.staging): those are hidden from everyone until the import is done."""


def _staging(campaign_id: int) -> Any:
    return exists().where(ImportJob.campaign_id == campaign_id)


def _raters(campaign_id: int) -> Any:
    return exists().where(CampaignMember.campaign_id == campaign_id, CampaignMember.role == Role.rater)


def excluded_raters(campaign_id: Any) -> Any:
    """The ids of the users a lead excluded from the campaign, as a subquery."""
    return select(CampaignMember.user_id).where(
        CampaignMember.campaign_id == campaign_id, CampaignMember.role == Role.excluded
    )


def _member(campaign_id: int, user_id: int, role: Role) -> Any:
    return exists().where(
        CampaignMember.campaign_id == campaign_id, CampaignMember.user_id == user_id, CampaignMember.role == role
    )


# Built once (they run on every submit), their values bound at the call.
_MAY_RATE = select(
    ~_staging(bindparam("campaign"))
    & (_member(bindparam("campaign"), bindparam("user"), Role.rater) | ~_raters(bindparam("campaign")))
    & ~_member(bindparam("campaign"), bindparam("user"), Role.excluded)
)
_CONSENTED = select(Consent.id).where(
    Consent.user_id == bindparam("user"),
    Consent.campaign_id == bindparam("campaign"),
    Consent.version == bindparam("version"),
)


def is_staging(*, session: Session, campaign_id: int) -> bool:
    return bool(session.exec(select(_staging(campaign_id))).one())


def has_rater_members(*, session: Session, campaign_id: int) -> bool:
    return bool(session.exec(select(_raters(campaign_id))).one())


def is_member(*, session: Session, campaign_id: int, user_id: int, role: Role) -> bool:
    return bool(session.exec(select(_member(campaign_id, user_id, role))).one())


def may_rate(*, session: Session, user: User, campaign_id: int) -> bool:
    """A rater works on the campaigns they are assigned to, or on an open one (no rater assigned), unless excluded
    from it. One query: it runs on every submit."""
    return bool(session.exec(_MAY_RATE, params={"campaign": campaign_id, "user": user.id}).one())


def may_lead(*, session: Session, user: User, campaign_id: int) -> bool:
    """Admins run every campaign; a lead runs the campaigns they are a lead member of."""
    if is_staging(session=session, campaign_id=campaign_id):
        return False
    if user.role == Role.admin:
        return True
    led = is_member(session=session, campaign_id=campaign_id, user_id=user.id, role=Role.lead)
    return user.role == Role.lead and led


def rateable_campaigns(*, session: Session, user: User) -> list[Campaign]:
    """The campaigns this user may judge or write in, by name."""
    assigned = exists().where(
        CampaignMember.campaign_id == Campaign.id,
        CampaignMember.user_id == user.id,
        CampaignMember.role == Role.rater,
    )
    has_raters = exists().where(CampaignMember.campaign_id == Campaign.id, CampaignMember.role == Role.rater)
    excluded = exists().where(
        CampaignMember.campaign_id == Campaign.id,
        CampaignMember.user_id == user.id,
        CampaignMember.role == Role.excluded,
    )
    query = select(Campaign).where(assigned | ~has_raters, ~excluded, _LIVE)
    return list(session.exec(query.order_by(Campaign.name)))


def led_campaigns(*, session: Session, user: User) -> list[Campaign]:
    """The campaigns this user runs: all of them for an admin, their own for a lead, none for a rater."""
    if user.role == Role.admin:
        return list(session.exec(select(Campaign).where(_LIVE).order_by(Campaign.name)))
    if user.role != Role.lead:
        return []
    led = exists().where(
        CampaignMember.campaign_id == Campaign.id,
        CampaignMember.user_id == user.id,
        CampaignMember.role == Role.lead,
    )
    return list(session.exec(select(Campaign).where(led, _LIVE).order_by(Campaign.name)))


def has_consented(*, session: Session, user_id: int, campaign: Campaign) -> bool:
    """True when the campaign asks for no consent, or the user accepted its current version."""
    if not campaign.consent_text.strip():
        return True
    values = {"user": user_id, "campaign": campaign.id, "version": campaign.consent_version}
    return session.exec(_CONSENTED, params=values).first() is not None


def campaign_members(*, session: Session, campaign_id: int) -> list[tuple[CampaignMember, User]]:
    """The campaign's members with their accounts: leads first, then raters, then excluded raters, each by
    username."""
    query = (
        select(CampaignMember, User)
        .join(User, User.id == CampaignMember.user_id)
        .where(CampaignMember.campaign_id == campaign_id)
        .order_by(case({Role.lead: 0, Role.rater: 1}, value=CampaignMember.role, else_=2), User.username)
    )
    return [(member, user) for member, user in session.exec(query)]


def set_member(*, session: Session, campaign: Campaign, user: User, role: Role, actor_id: int | None) -> bool:
    """Make ``user`` a ``role`` member of ``campaign`` (a new member, or a changed role); False when already so. An
    ``excluded`` member's judged pairs have room again (the campaign's queue frontier is set back), and so have the
    items they held open: their leases on the campaign are dropped, as an erasure drops them."""
    if role not in (Role.rater, Role.lead, Role.excluded):
        raise ValueError(f"a campaign member is a rater, a lead or excluded, not {role!r}")
    query = select(CampaignMember).where(CampaignMember.campaign_id == campaign.id, CampaignMember.user_id == user.id)
    member = session.exec(query.with_for_update()).first()
    if member is not None and member.role == role:
        return False
    details = {"user_id": user.id, "role": role, "from": member.role if member else None}
    if member is None:
        member = CampaignMember(campaign_id=campaign.id, user_id=user.id)
    member.role = role
    if role == Role.excluded:
        campaign.queue_frontier = 0  # storage.frontier
        leases = delete(Assignment).where(
            Assignment.campaign_id == campaign.id, Assignment.rater_id == user.id, col(Assignment.closed_at).is_(None)
        )
        session.execute(leases)
    session.add(member)
    session.add(AuditEvent(actor_id=actor_id, action="member.assign", target=campaign.name, details=details))
    session.flush()
    return True


def remove_member(*, session: Session, campaign: Campaign, user: User, actor_id: int | None) -> None:
    """Take ``user`` off ``campaign``; ValueError when they are not a member."""
    query = select(CampaignMember).where(CampaignMember.campaign_id == campaign.id, CampaignMember.user_id == user.id)
    member = session.exec(query.with_for_update()).first()
    if member is None:
        raise ValueError(f"{user.username!r} is not a member of campaign {campaign.name!r}")
    details = {"user_id": user.id, "role": member.role}
    session.delete(member)
    session.add(AuditEvent(actor_id=actor_id, action="member.remove", target=campaign.name, details=details))
    session.flush()
