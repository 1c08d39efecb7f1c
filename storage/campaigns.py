"""Campaign edits (a changed guideline or consent text gets a new version, and every edit is audited) and reads."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from storage.models import AuditEvent, Campaign, CampaignUpdate, Prompt


def campaign_id_for(*, session: Session, name: str) -> int:
    """The id of the campaign called ``name``; ValueError naming it when there is none."""
    campaign_id = session.exec(select(Campaign.id).where(Campaign.name == name)).first()
    if campaign_id is None:
        raise ValueError(f"no campaign named {name!r}")
    return campaign_id


def prompts_for(*, session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """The campaign's prompts in id order: ``prompt_id``, ``prompt`` (its messages), ``content_hash``, ``source`` and
    ``license``. What an online method (PPO) answers: no response, pair or judgment is read."""
    prompts = session.exec(select(Prompt).where(Prompt.campaign_id == campaign_id).order_by(Prompt.id)).all()
    return [{"prompt_id": p.id, "prompt": p.messages, "content_hash": p.content_hash, "source": p.source,
             "license": p.license} for p in prompts]  # fmt: skip


def update_campaign(*, session: Session, campaign_id: int, changes: CampaignUpdate, actor_id: int | None) -> Campaign:
    """Apply ``changes``; judgments record the guideline version in force, so an edited text bumps its version."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise ValueError(f"no campaign with id {campaign_id}")
    changed = {k: v for k, v in changes.model_dump(exclude_none=True).items() if getattr(campaign, k) != v}
    if "guidelines" in changed:
        campaign.guidelines_version += 1
    if "consent_text" in changed:
        campaign.consent_version += 1
    if changed.get("overlap_k", 0) > campaign.overlap_k:
        campaign.queue_frontier = 0  # full pairs have room again (storage.frontier)
    for name, value in changed.items():
        setattr(campaign, name, value)
    details = {"changed": sorted(changed), "guidelines_version": campaign.guidelines_version}
    session.add(AuditEvent(actor_id=actor_id, action="campaign.update", target=campaign.name, details=details))
    session.flush()
    return campaign
