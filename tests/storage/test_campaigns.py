import pytest
from sqlmodel import select

from storage.campaigns import update_campaign
from storage.db import write_session
from storage.models import AuditEvent, Campaign, CampaignUpdate


def test_editing_guidelines_bumps_their_version_and_is_audited(engine):
    with write_session(engine) as session, session.begin():
        campaign = Campaign(name="c", guidelines="v1 text")
        session.add(campaign)
        session.flush()
        update_campaign(session=session, campaign_id=campaign.id, changes=CampaignUpdate(overlap_k=5), actor_id=None)
        assert (campaign.guidelines_version, campaign.overlap_k) == (1, 5)
        same = CampaignUpdate(guidelines="v1 text")  # unchanged text: no new version
        assert (
            update_campaign(session=session, campaign_id=campaign.id, changes=same, actor_id=None).guidelines_version
            == 1
        )
        edit = CampaignUpdate(guidelines="v2 text", consent_text="new consent")
        update_campaign(session=session, campaign_id=campaign.id, changes=edit, actor_id=None)
        assert (campaign.guidelines_version, campaign.consent_version, campaign.guidelines) == (2, 2, "v2 text")
    with write_session(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "campaign.update")).all()
        assert [e.details["changed"] for e in events] == [["overlap_k"], [], ["consent_text", "guidelines"]]


def test_bad_campaign_edits_are_refused():
    with pytest.raises(ValueError, match="overlap_k"):
        CampaignUpdate(overlap_k=0)
    with pytest.raises(ValueError, match="calibration_rate"):
        CampaignUpdate(calibration_rate=1.5)
