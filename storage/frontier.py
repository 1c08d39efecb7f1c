"""Where a campaign's open pairs begin: every regular pair below its *frontier* has k current judgments, so the work
queue looks only at pairs from there on and its cost does not grow with the judgments a campaign has collected.

Judgments only accumulate (a revision replaces one), so a pair below the frontier stays full. Three things can open
one again, and each sets the stored frontier back to 0: an erasure, a larger overlap k, and a rater excluded from
the campaign (whose judgments stop counting: storage.members). New pairs come with higher
ids. The frontier is stored on the campaign (``queue_frontier``) and moved on from there at most every
``FRONTIER_SECONDS`` per server process, in one pass over the judgments of the pairs past it; in between it may lag
behind pairs filled meanwhile, and every queue statement reads the judgments of the pairs it lags behind. A stored
frontier other than the one this process found last (set back, or another database) is searched from again at once.
A campaign whose first pairs stay open (a domain no rater has) keeps its frontier there, and the queue's cost grows
again with the judgments past it.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import bindparam, exists, func, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from storage.members import excluded_raters
from storage.models import CalibrationItem, Campaign, Judgment, Pair

FRONTIER_SECONDS = 1.0
"""Every second: 50 raters fill about 20 pairs a second at k 3, so the queue reads a second's judgments past the
frontier. Every 30 s it read up to 1,500, about 2,000 buffer reads a queue statement on PostgreSQL (most of a submit's
database work); each search past the last one reads only the judgments since."""
_known: dict[tuple[str, int, int], tuple[float, int]] = {}  # (database, campaign, k) -> (until, frontier found)
_lock = threading.Lock()


def _first_not_full(*, session: Session, campaign_id: int, k: int, start: int) -> int:
    """The lowest id (from ``start``) of a regular pair with fewer than k current judgments; past the last pair if
    every one is full. One pass over the judgments of the pairs from ``start`` on."""
    counts = (
        select(Judgment.pair_id, func.count().label("n"))
        .where(Judgment.pair_id >= start, col(Judgment.supersedes_id).is_(None))
        .where(col(Judgment.rater_id).not_in(excluded_raters(campaign_id)))
        .group_by(Judgment.pair_id)
        .subquery()
    )
    query = (
        select(Pair.id)
        .outerjoin(counts, counts.c.pair_id == Pair.id)
        .where(Pair.campaign_id == campaign_id, Pair.id >= start, func.coalesce(counts.c.n, 0) < k)
        .where(~exists().where(CalibrationItem.pair_id == Pair.id))
        .order_by(Pair.id)
        .limit(1)
    )
    found = session.exec(query).first()
    if found is not None:
        return found
    last = session.exec(select(func.max(Pair.id)).where(Pair.campaign_id == campaign_id)).one()
    return (last or 0) + 1


_CAMPAIGN = bindparam("campaign")
# The campaign's row unless another transaction holds it (another request storing a frontier: this one need not;
# an erasure or a new k setting it back). The stored one is moved only from where this search began.
_CLAIM = select(Campaign.id).where(Campaign.id == _CAMPAIGN).with_for_update(key_share=True, skip_locked=True)
_MOVE = (
    update(Campaign)
    .where(col(Campaign.id) == _CAMPAIGN, col(Campaign.queue_frontier) == bindparam("start"))
    .values(queue_frontier=bindparam("found"))
)


def frontier(*, session: Session, campaign: Campaign) -> int:
    """The campaign's frontier: no regular pair below it has room. Moves the stored one on in this transaction, unless
    another transaction holds the campaign's row; one request of this process searches at a time."""
    start, now = campaign.queue_frontier, time.monotonic()
    key = (session.get_bind().url.render_as_string(hide_password=False), campaign.id, campaign.overlap_k)
    with _lock:
        expires, known = _known.get(key, (0.0, -1))
        if expires > now and known == start:  # the stored one is what this process found last: nothing set it back
            return start
        _known[key] = (now + FRONTIER_SECONDS, start)  # meanwhile this process's other requests keep the stored one
    found = _first_not_full(session=session, campaign_id=campaign.id, k=campaign.overlap_k, start=start)
    if found != start and session.exec(_CLAIM, params={"campaign": campaign.id}).first() is not None:
        moved = session.exec(_MOVE, params={"campaign": campaign.id, "start": start, "found": found}).rowcount
        if moved:  # this transaction's copy follows, so that its next look needs no search
            set_committed_value(campaign, "queue_frontier", found)
    with _lock:
        _known[key] = (now + FRONTIER_SECONDS, found)
    return found


def forget(*, session: Session) -> None:
    """Judgments were removed (an erasure): every campaign's frontier is found again from its first pair."""
    session.exec(update(Campaign).values(queue_frontier=0))
