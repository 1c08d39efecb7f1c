"""Campaign edits: a changed guideline or consent text gets a new version, and every edit is audited."""

from __future__ import annotations

from sqlmodel import Session

from storage.models import AuditEvent, Campaign, CampaignUpdate


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
    for name, value in changed.items():
        setattr(campaign, name, value)
    details = {"changed": sorted(changed), "guidelines_version": campaign.guidelines_version}
    session.add(AuditEvent(actor_id=actor_id, action="campaign.update", target=campaign.name, details=details))
    session.flush()
    return campaign
