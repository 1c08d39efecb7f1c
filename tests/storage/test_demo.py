from sqlmodel import Session, func, select

from storage.demo import seed_demo
from storage.models import CalibrationItem, CalibrationKind, Campaign, Pair, Prompt, Response


def test_demo_campaign_offers_every_screen_once(engine):
    assert seed_demo(engine) == "demo"
    assert seed_demo(engine) is None  # a database that has campaigns is left alone
    with Session(engine) as session:
        campaign = session.exec(select(Campaign)).one()
        assert (
            campaign.kind == "both" and campaign.guidelines.startswith("# Demo") and campaign.min_reasoning_chars == 30
        )
        kinds = set(session.exec(select(CalibrationItem.kind)).all())
        assert kinds == {k.value for k in CalibrationKind} - {"repeat"}
        assert session.exec(select(func.count(Pair.id))).one() == 12
        assert session.exec(select(func.count(Prompt.id))).one() == 15
        draft = session.exec(
            select(Response).where(Response.author == "demo-writer-2", Response.source == "concord-demo")
        )
        assert any(r.text.startswith("Tests are good") for r in draft)
        for item in session.exec(select(CalibrationItem)):
            assert item.expected in item.accepted and item.explanation
