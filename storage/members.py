"""Who may work on or run which campaign: campaign membership and consent, as queries."""

from __future__ import annotations

from sqlalchemy import exists
from sqlmodel import Session, select

from storage.models import Campaign, CampaignMember, Consent, Role, User


def has_rater_members(*, session: Session, campaign_id: int) -> bool:
    query = select(CampaignMember.id).where(
        CampaignMember.campaign_id == campaign_id, CampaignMember.role == Role.rater
    )
    return session.exec(query.limit(1)).first() is not None


def is_member(*, session: Session, campaign_id: int, user_id: int, role: Role) -> bool:
    query = select(CampaignMember.id).where(
        CampaignMember.campaign_id == campaign_id, CampaignMember.user_id == user_id, CampaignMember.role == role
    )
    return session.exec(query).first() is not None


def may_rate(*, session: Session, user: User, campaign_id: int) -> bool:
    """A rater works on the campaigns they are assigned to, or on an open one (no rater assigned)."""
    if is_member(session=session, campaign_id=campaign_id, user_id=user.id, role=Role.rater):
        return True
    return not has_rater_members(session=session, campaign_id=campaign_id)


def may_lead(*, session: Session, user: User, campaign_id: int) -> bool:
    """Admins run every campaign; a lead runs the campaigns they are a lead member of."""
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
    return list(session.exec(select(Campaign).where(assigned | ~has_raters).order_by(Campaign.name)))


def led_campaigns(*, session: Session, user: User) -> list[Campaign]:
    """The campaigns this user runs: all of them for an admin, their own for a lead, none for a rater."""
    if user.role == Role.admin:
        return list(session.exec(select(Campaign).order_by(Campaign.name)))
    if user.role != Role.lead:
        return []
    led = exists().where(
        CampaignMember.campaign_id == Campaign.id,
        CampaignMember.user_id == user.id,
        CampaignMember.role == Role.lead,
    )
    return list(session.exec(select(Campaign).where(led).order_by(Campaign.name)))


def has_consented(*, session: Session, user_id: int, campaign: Campaign) -> bool:
    """True when the campaign asks for no consent, or the user accepted its current version."""
    if not campaign.consent_text.strip():
        return True
    query = select(Consent.id).where(
        Consent.user_id == user_id, Consent.campaign_id == campaign.id, Consent.version == campaign.consent_version
    )
    return session.exec(query).first() is not None
