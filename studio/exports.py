"""Exports, as leads and admins make, list and download them: one service, no UI code.

An export is written by storage.export into its own folder and zipped for download. The .zip is served only by
``ExportService.export_file`` through studio.server's download route, which checks that the caller leads the export's
campaign (or is an admin) on every download; Gradio's file route is never given the exports folder. An export
made before an erasure that reached it is stale: it says so where it is listed, and downloads only when asked for
knowingly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from storage.models import AuditEvent, ExportRecord, User
from studio.access import Service
from studio.validation import ValidationFailed

if TYPE_CHECKING:
    from storage.export import ExportResult

PREVIEW_ROWS = 5


@dataclass(frozen=True)
class ExportPreview:
    export_id: int
    out_dir: Path
    kind: str
    counts: dict[str, int]
    summary: str
    rows: list[dict[str, Any]]  # the first rows of the train split
    card: str  # the dataset card (README.md)
    zip_path: Path  # the export folder as one .zip, for download


@dataclass(frozen=True)
class ExportSummary:
    """One export of a campaign as its leads see it listed."""

    export_id: int
    kind: str
    created_at: datetime
    row_count: int
    made_by: str  # a username, or "command line"
    stale: bool  # it holds data of a person erased since
    file_name: str  # the .zip it downloads as


@dataclass(frozen=True)
class ExportFile:
    path: Path  # the .zip on the server's disk
    file_name: str
    stale: bool


class StaleExport(ValidationFailed):
    """The export holds data erased since it was made: downloading it needs saying so."""


class ExportService(Service):
    """Make, list and download a campaign's exports: the campaign's leads and admins only."""

    def export(
        self, actor_id: int, campaign_id: int, *, out_dir: Path, kind: str = "preference", policy: str = "majority",
        min_agreement: float = 0.0, exclude_flagged_raters: bool = False, keep_ties: bool = False,
        keep_both_bad: bool = False, use_prior: bool = True, include_calibration: str = "none",
        test_fraction: float = 0.1, push_to_hub: str | None = None, include_unreviewed: bool = False,
    ) -> ExportPreview:  # fmt: skip
        """Export the campaign (storage.export.export_campaign, every option of ``launch.py export``), then return
        a preview: the first rows of the train split, the dataset card and a .zip of the folder. Audited by storage.
        """
        from storage.export import export_campaign  # datasets and pyarrow load only when a lead exports

        name = self._transaction(lambda session: self._lead_of(session, actor_id, campaign_id)[1].name)
        result = export_campaign(
            engine=self.engine, campaign=name, kind=kind, out_dir=Path(out_dir), policy=policy,
            min_agreement=min_agreement, exclude_flagged_raters=exclude_flagged_raters, keep_ties=keep_ties,
            keep_both_bad=keep_both_bad, use_prior=use_prior, include_calibration=include_calibration,
            test_fraction=test_fraction, push_to_hub=push_to_hub, actor_id=actor_id,
            include_unreviewed=include_unreviewed,
        )  # fmt: skip
        return _preview(result)

    def exports(self, actor_id: int, campaign_id: int) -> list[ExportSummary]:
        """The campaign's exports, newest first, each saying whether it is stale (holds data erased since)."""

        def action(session: Session) -> list[ExportSummary]:
            self._lead_of(session, actor_id, campaign_id)
            query = (
                select(ExportRecord, User.username)
                .join(User, col(ExportRecord.created_by) == User.id, isouter=True)
                .where(ExportRecord.campaign_id == campaign_id)
                .order_by(col(ExportRecord.id).desc())
            )
            return [
                ExportSummary(
                    export_id=record.id,
                    kind=record.kind,
                    created_at=record.created_at,
                    row_count=record.row_count,
                    made_by=username or "command line",
                    stale=record.stale,
                    file_name=_zip_name(record),
                )
                for record, username in session.exec(query)
            ]

        return self._transaction(action)

    def export_file(self, actor_id: int, export_id: int, *, acknowledge_stale: bool = False) -> ExportFile:
        """The .zip of an export, for the campaign's leads and admins only (studio.server serves it; Gradio's file
        route never does). A stale export raises StaleExport unless ``acknowledge_stale``. Downloads are audited."""

        def action(session: Session) -> ExportRecord:
            record = session.get(ExportRecord, export_id)
            if record is None:
                raise LookupError(f"There is no export #{export_id}.")
            self._lead_of(session, actor_id, record.campaign_id)
            if record.stale and not acknowledge_stale:
                raise StaleExport(
                    f"Export #{export_id} is stale: it holds data of a person erased since it was made. Make a new "
                    "export; download this one only if you must, and do not share it."
                )
            details = {"export_id": export_id, "stale": record.stale}
            session.add(
                AuditEvent(actor_id=actor_id, action="export.download", target=record.out_path, details=details)
            )
            return record

        record = self._transaction(action)
        if not record.out_path:
            raise LookupError(f"Export #{export_id} has no files on the server.")
        folder, archive = Path(record.out_path), Path(record.out_path + ".zip")
        if not archive.is_file() and folder.is_dir():  # an export made on the command line has no .zip yet
            archive = Path(shutil.make_archive(str(folder), "zip", root_dir=folder))
        if not archive.is_file():
            raise LookupError(f"The files of export #{export_id} are no longer on the server.")
        return ExportFile(path=archive, file_name=_zip_name(record), stale=record.stale)


def _zip_name(record: ExportRecord) -> str:
    return f"{Path(record.out_path).name or f'export-{record.id}'}.zip"


def _preview(result: ExportResult) -> ExportPreview:
    import pyarrow.parquet as pq

    train = pq.read_table(result.out_dir / "parquet" / "train.parquet")
    archive = shutil.make_archive(str(result.out_dir), "zip", root_dir=result.out_dir)
    return ExportPreview(
        export_id=result.export_id,
        out_dir=result.out_dir,
        kind=result.kind,
        counts=dict(result.counts),
        summary=result.summary(),
        rows=train.slice(0, PREVIEW_ROWS).to_pylist(),
        card=(result.out_dir / "README.md").read_text(encoding="utf-8"),
        zip_path=Path(archive),
    )
