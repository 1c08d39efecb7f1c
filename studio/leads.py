"""What campaign leads (and admins) do: set campaigns up, import, choose members, mark calibration items, read the
quality report (raters by name), adjudicate disagreements, review demonstrations (studio.reviews) and export
(studio.exports). No UI code.

Every public method takes the acting user's id first and checks in the service that they may act: the campaign's
leads and admins for campaign actions, admins for accounts (studio.admin). Each is one transaction, except import
and export, which check first and then run storage's own transaction (a file is parsed, or written, outside it).
Results are frozen dataclasses or ``*Public`` schemas, never rows bound to a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select

from storage import campaigns, imports, members, review
from storage.db import read_session
from storage.imports import ImportReport
from storage.models import (
    PREFERENCE_SCALE,
    AuditEvent,
    CalibrationItemCreate,
    Campaign,
    CampaignCreate,
    CampaignMember,
    CampaignPublic,
    CampaignUpdate,
    Pair,
    Role,
    User,
)
from storage.review import Decision, JudgmentView, PairDetail, PairSummary
from studio.access import PermissionDenied
from studio.admin import AdminService, clean_domains
from studio.exports import ExportService
from studio.generation import GenerationService
from studio.reviews import ReviewService
from studio.runs import RunsService
from studio.scoring import ScoringService
from studio.validation import ValidationFailed, message

__all__ = ["Decision", "JudgmentView", "LeadService", "MemberRow", "PairDetail", "PairSummary"]


@dataclass(frozen=True)
class MemberRow:
    username: str
    role: str  # the role in this campaign: rater | lead | excluded
    domains: list[str]  # the user's domains
    active: bool


def _member_row(user: User, role: str) -> MemberRow:
    return MemberRow(username=user.username, role=str(role), domains=list(user.domains), active=user.active)


def with_names(report: dict[str, Any], names: dict[str, str], excluded: set[str]) -> dict[str, Any]:
    """The quality report as its leads read it: every rater entry gets a ``name`` (their username, by pseudonym) and
    ``excluded`` (whether a lead excluded them from the campaign: their judgments are in the report, not in exports),
    and the disagreements' votes are keyed by name, "(excluded)" after an excluded rater's: the pair's majority
    counts their vote, its export does not. Exports and the command line keep pseudonyms."""
    for entry in [*report["raters"], *report["flags"], *report["not_enough_evidence"]]:
        entry["name"] = names.get(entry["pseudonym"], entry["pseudonym"])
        entry["excluded"] = entry["pseudonym"] in excluded
    for row in report["disagreements"]:
        votes = row["votes"].items()
        row["votes"] = {names.get(who, who) + (" (excluded)" if who in excluded else ""): v for who, v in votes}
    return report


def _check_preference(preference: int) -> None:
    if isinstance(preference, bool) or preference not in PREFERENCE_SCALE:
        raise ValidationFailed(
            f"Choose a preference from -2 (A much better) to 2 (B much better); got {preference!r}."
        )


def _calibration_item(
    pair_id: int, expected: int, accepted: list[int], kind: str, explanation: str
) -> CalibrationItemCreate:
    _check_preference(expected)
    try:
        return CalibrationItemCreate(
            pair_id=pair_id, expected=expected, accepted=[expected, *accepted], kind=kind, explanation=explanation
        )
    except ValidationError as error:
        raise ValidationFailed(message(error)) from None


class LeadService(AdminService, ExportService, ReviewService, GenerationService, RunsService, ScoringService):
    """The leads' and admins' actions; the admins' own (accounts) come from AdminService, exports from
    ExportService, the review of demonstrations from ReviewService, generation and evaluation results from
    GenerationService, training runs from RunsService, the reward model's queue scores and likely label errors from
    ScoringService."""

    def _lead_of_pair(self, session: Session, actor_id: int, pair_id: int) -> tuple[User, Pair]:
        pair = session.get(Pair, pair_id)
        if pair is None:
            raise LookupError(f"no pair with id {pair_id}")
        user, _ = self._lead_of(session, actor_id, pair.campaign_id)
        return user, pair

    def led_campaigns(self, actor_id: int) -> list[tuple[str, int]]:
        """(name, id) of the campaigns this user runs: all for an admin, their own for a lead, none for a rater."""

        def action(session: Session) -> list[tuple[str, int]]:
            user = self._active_user(session, actor_id)
            return [(c.name, c.id) for c in members.led_campaigns(session=session, user=user)]

        return self._transaction(action)

    def campaign(self, actor_id: int, campaign_id: int) -> CampaignPublic:
        """Every setting of a campaign the user runs, versions included."""
        return self._transaction(
            lambda session: CampaignPublic.model_validate(self._lead_of(session, actor_id, campaign_id)[1])
        )

    def create_campaign(self, actor_id: int, campaign: CampaignCreate) -> int:
        """Create a campaign (leads and admins); its creator becomes a lead member. Returns its id."""

        def action(session: Session) -> int:
            user = self._active_user(session, actor_id)
            if user.role not in (Role.lead, Role.admin):
                raise PermissionDenied("Only leads and admins can create campaigns.")
            name = (campaign.name or "").strip()
            if not name:
                raise ValidationFailed("Give the campaign a name.")
            if session.exec(select(Campaign.id).where(Campaign.name == name)).first() is not None:
                raise ValidationFailed(f"A campaign named {name!r} already exists; choose another name.")
            row = Campaign.model_validate(campaign, update={"name": name})
            session.add(row)
            session.flush()
            session.add(CampaignMember(campaign_id=row.id, user_id=user.id, role=Role.lead))
            session.add(AuditEvent(actor_id=actor_id, action="campaign.create", target=name, details={"id": row.id}))
            return row.id

        return self._transaction(action)

    def update_campaign(self, actor_id: int, campaign_id: int, changes: CampaignUpdate) -> CampaignPublic:
        """Change a campaign's settings; edited guidelines or consent text get a new version. Audited."""

        def action(session: Session) -> CampaignPublic:
            self._lead_of(session, actor_id, campaign_id)
            if changes.rubric is not None and not [c for c in changes.rubric if c.strip()]:
                raise ValidationFailed("The rubric needs at least one criterion.")
            row = campaigns.update_campaign(
                session=session, campaign_id=campaign_id, changes=changes, actor_id=actor_id
            )
            return CampaignPublic.model_validate(row)

        return self._transaction(action)

    def import_file(
        self, actor_id: int, campaign_id: int, path: str | Path, fmt: str | None = None, known_as: str = "prior",
        drop_identical: bool = False,
    ) -> ImportReport:  # fmt: skip
        """Import a file into the campaign (storage.imports); ImportFailed names the file, line and field, and then
        nothing was written. Audited by storage."""
        name = self._transaction(lambda session: self._lead_of(session, actor_id, campaign_id)[1].name)
        return imports.import_file(
            path, engine=self.engine, campaign=name, fmt=fmt or None, known_as=known_as,
            drop_identical=drop_identical, actor_id=actor_id,
        )  # fmt: skip

    def pairs(
        self, actor_id: int, campaign_id: int, *, only_disagreed: bool = False, limit: int = 200
    ) -> list[PairSummary]:
        """The campaign's pairs in id order, or only those whose raters disagree, to mark or adjudicate."""

        def action(session: Session) -> list[PairSummary]:
            self._lead_of(session, actor_id, campaign_id)
            return review.pair_summaries(
                session=session, campaign_id=campaign_id, only_disagreed=only_disagreed, limit=limit
            )

        return self._transaction(action)

    def mark_calibration(
        self, actor_id: int, pair_id: int, *, expected: int, accepted: list[int], kind: str, explanation: str
    ) -> int:
        """Make the pair a calibration item (or change the one it is); ``expected`` always counts as accepted."""

        def action(session: Session) -> int:
            self._lead_of_pair(session, actor_id, pair_id)
            item = _calibration_item(pair_id, expected, accepted, kind, explanation)
            return review.mark_calibration(session=session, item=item, actor_id=actor_id).id

        return self._transaction(action)

    def members(self, actor_id: int, campaign_id: int) -> list[MemberRow]:
        """The campaign's leads, then its raters. A campaign with no rater member is open to every rater."""

        def action(session: Session) -> list[MemberRow]:
            self._lead_of(session, actor_id, campaign_id)
            return [
                _member_row(user, member.role)
                for member, user in members.campaign_members(session=session, campaign_id=campaign_id)
            ]

        return self._transaction(action)

    def _member_change(self, session: Session, actor_id: int, campaign_id: int, username: str):
        _, campaign = self._lead_of(session, actor_id, campaign_id)
        return campaign, self._user_named(session, username)

    def assign(self, actor_id: int, campaign_id: int, username: str, role: str = "rater") -> MemberRow:
        """Add a member (or change their role in the campaign). Once it has a rater member, a campaign is closed to
        the raters who are not members; an excluded one no longer works on it, and their judgments leave its exports
        and its overlap count (storage.members). Audited."""

        def action(session: Session) -> MemberRow:
            campaign, user = self._member_change(session, actor_id, campaign_id, username)
            if role not in (Role.rater, Role.lead, Role.excluded):
                raise ValidationFailed(f"A campaign member is a rater, a lead or excluded (got {role!r}).")
            if role == Role.excluded and user.id == actor_id:
                raise ValidationFailed("You cannot exclude yourself; ask another lead or an admin.")
            if not user.active and role != Role.excluded:
                raise ValidationFailed(f"{username!r} is deactivated; an admin can reactivate the account.")
            if role == Role.lead and user.role == Role.rater:
                raise ValidationFailed(f"{username!r} is a rater; an admin must make them a lead first.")
            members.set_member(session=session, campaign=campaign, user=user, role=Role(role), actor_id=actor_id)
            return _member_row(user, role)

        return self._transaction(action)

    def unassign(self, actor_id: int, campaign_id: int, username: str) -> None:
        """Take a member off the campaign; a lead cannot take themselves off. Audited."""

        def action(session: Session) -> None:
            campaign, user = self._member_change(session, actor_id, campaign_id, username)
            if user.id == actor_id:
                raise ValidationFailed("You cannot take yourself off a campaign; ask another lead or an admin.")
            try:
                members.remove_member(session=session, campaign=campaign, user=user, actor_id=actor_id)
            except ValueError as error:
                raise ValidationFailed(str(error)) from None

        self._transaction(action)

    def set_domains(self, actor_id: int, campaign_id: int, username: str, domains: list[str]) -> MemberRow:
        """Set the domains of a rater of the campaign (the user's own, which apply in every campaign). Audited."""

        def action(session: Session) -> MemberRow:
            campaign, user = self._member_change(session, actor_id, campaign_id, username)
            if not members.is_member(session=session, campaign_id=campaign.id, user_id=user.id, role=Role.rater):
                raise ValidationFailed(f"{username!r} is not a rater of campaign {campaign.name!r}.")
            details = {"user_id": user.id, "from": list(user.domains), "to": clean_domains(domains)}
            user.domains = details["to"]
            session.add(AuditEvent(actor_id=actor_id, action="user.domains", target=user.username, details=details))
            session.flush()
            return _member_row(user, Role.rater)

        return self._transaction(action)

    def quality(self, actor_id: int, campaign_id: int, n_boot: int = 200) -> dict[str, Any]:
        """The campaign's quality report (storage.frames.quality_report) with each rater's username beside their
        pseudonym and whether they are excluded (``with_names``); ValueError while it has no judgments."""
        from storage.frames import quality_report  # pandas and the statistics load only when a lead asks

        name = self._transaction(lambda session: self._lead_of(session, actor_id, campaign_id)[1].name)
        report = quality_report(engine=self.engine, campaign=name, n_boot=n_boot)
        ids = [r["rater"] for r in report["raters"]]
        with read_session(self.engine) as session:
            names = dict(session.exec(select(User.pseudonym, User.username).where(col(User.id).in_(ids))).all())
            excluded = select(User.pseudonym).where(col(User.id).in_(members.excluded_raters(campaign_id)))
            return with_names(report, names, set(session.exec(excluded).all()))

    def pair_detail(self, actor_id: int, pair_id: int) -> PairDetail:
        """The pair, every current judgment of it, its calibration item and newest adjudication."""

        def action(session: Session) -> PairDetail:
            self._lead_of_pair(session, actor_id, pair_id)
            return review.pair_detail(session=session, pair_id=pair_id)

        return self._transaction(action)

    def adjudicate(
        self, actor_id: int, pair_id: int, *, preference: int, both_bad: bool, note: str,
        make_calibration: bool = False, kind: str = "factual_priority",
    ) -> int:  # fmt: skip
        """Record the lead's final decision on a pair, which exports use in place of the raters' consensus; with
        ``make_calibration`` the decision also becomes the pair's calibration item. Returns the Adjudication id."""

        def action(session: Session) -> int:
            _, pair = self._lead_of_pair(session, actor_id, pair_id)
            _check_preference(preference)
            if not isinstance(both_bad, bool):
                raise ValidationFailed(f"'Both bad' must be yes or no (got {both_bad!r}).")
            if not (note or "").strip():
                raise ValidationFailed("Write a note saying why: the raters and later readers need the reason.")
            row = review.record_adjudication(
                session=session, pair=pair, preference=preference, both_bad=both_bad, note=note.strip(),
                actor_id=actor_id,
            )  # fmt: skip
            if make_calibration:
                item = _calibration_item(pair_id, preference, [preference], kind, note.strip())
                review.mark_calibration(session=session, item=item, actor_id=actor_id)
            return row.id

        return self._transaction(action)
