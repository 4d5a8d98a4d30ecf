"""Model releases in the database: each name's champion and challenger, and their history.

Every process reads the same rows (the web per request, within a second; the predict
workers on every model-watch tick), so a change made through one web process or the CLI
holds everywhere within a tick. A change locks its name's row (`FOR UPDATE`, or the
insert's conflict for a first release), writes the new state and its line in
`model_releases` in one transaction: the history never misses a change, nor records one
that did not happen.

The champion is the version that answers when no challenger does: pinned by a promotion
(or a rollback to a pinned version), else the model file's current version, which the
caller passes in as `file_version` (the database does not read MODEL_DIR).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.compare.kept import record_experiment
from db.models import ModelReleaseChange, ModelReleaseState

MODES = ("shadow", "canary")
HISTORY_LIMIT = 200


class ReleaseRefused(Exception):
    """A change that cannot be made in the release's present state (409)."""


@dataclass(frozen=True)
class Release:
    model_name: str
    champion: str | None  # pinned; None: the file's current version
    previous_champion: str | None = None
    challenger: str | None = None
    mode: str | None = None
    percent: int | None = None
    guards: dict[str, Any] = field(default_factory=dict)
    challenger_since: datetime | None = None
    updated_at: datetime | None = None

    def champion_or(self, file_version: str | None) -> str | None:
        """The version that answers as champion."""
        return self.champion or file_version

    def versions(self) -> set[str]:
        """The versions this release names (kept and held loaded)."""
        named = {self.champion, self.previous_champion, self.challenger}
        return {version for version in named if version}


def _release(row: ModelReleaseState) -> Release:
    return Release(
        model_name=row.model_name,
        champion=row.champion,
        previous_champion=row.previous_champion,
        challenger=row.challenger,
        mode=row.mode,
        percent=row.percent,
        guards=dict(row.guards or {}),
        challenger_since=row.challenger_since,
        updated_at=row.updated_at,
    )


def releases(session: Session) -> dict[str, Release]:
    """Every name's release (a row per name that ever had one: a few rows)."""
    return {row.model_name: _release(row) for row in session.scalars(select(ModelReleaseState))}


def pinned_champions(session: Session) -> dict[str, str]:
    """name -> the champion version its release pins (a name without one serves its file)."""
    rows = session.execute(
        select(ModelReleaseState.model_name, ModelReleaseState.champion).where(
            ModelReleaseState.champion.is_not(None)
        )
    )
    return {row.model_name: row.champion for row in rows}


def release_of(session: Session, model_name: str) -> Release | None:
    row = session.get(ModelReleaseState, model_name)
    return None if row is None else _release(row)


def _locked(session: Session, model_name: str) -> ModelReleaseState:
    # A first release inserts its row; a concurrent first release waits on the conflict,
    # then both lock the one row.
    session.execute(
        insert(ModelReleaseState)
        .values(model_name=model_name)
        .on_conflict_do_nothing(index_elements=["model_name"])
    )
    return session.scalars(
        select(ModelReleaseState).where(ModelReleaseState.model_name == model_name).with_for_update()
    ).one()


def _record(
    session: Session,
    row: ModelReleaseState,
    who: str,
    action: str,
    old: str | None,
    new: str | None,
    reason: str,
) -> None:
    session.add(
        ModelReleaseChange(
            model_name=row.model_name,
            who=who,
            action=action,
            from_version=old,
            to_version=new,
            mode=row.mode,
            percent=row.percent,
            reason=reason,
        )
    )


def set_challenger(
    session: Session,
    model_name: str,
    *,
    challenger: str | None,
    mode: str | None,
    percent: int | None,
    guards: dict[str, Any] | None,
    who: str,
    reason: str,
    now: datetime,
    threshold: float = 0.5,
) -> Release:
    """Set (or clear, with `challenger` None) the challenger; commits. `mode` is shadow or
    canary (canary with `percent` 1-100). A new experiment's comparison is kept at
    `threshold` (the model's decision threshold) from now on."""
    row = _locked(session, model_name)
    old = row.challenger
    if challenger is None:
        row.challenger = row.mode = row.percent = row.challenger_since = None
    else:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if old != challenger or row.mode != mode:
            row.challenger_since = now  # a new experiment: the comparison's window starts here
            record_experiment(session, model_name, challenger, now, threshold)
        row.challenger, row.mode = challenger, mode
        row.percent = percent if mode == "canary" else None
    if guards is not None:
        row.guards = guards
    row.updated_at = now
    _record(session, row, who, "release", old, challenger, reason)
    session.commit()
    return _release(row)


def promote(
    session: Session,
    model_name: str,
    *,
    file_version: str | None,
    who: str,
    reason: str,
    now: datetime,
    expected: str | None = None,
) -> Release:
    """The challenger becomes the (pinned) champion, the champion before it is kept for a
    rollback, and the challenger is cleared; commits. ReleaseRefused without a challenger,
    or when it is no longer `expected` (the version the caller checked the workers hold)."""
    row = _locked(session, model_name)
    if row.challenger is None:
        session.rollback()
        raise ReleaseRefused(f"{model_name} has no challenger to promote")
    if expected is not None and row.challenger != expected:
        session.rollback()
        raise ReleaseRefused(
            f"{model_name}'s challenger changed to {row.challenger} meanwhile; check it again"
        )
    old = row.champion or file_version
    new = row.challenger
    row.previous_champion, row.champion = old, new
    row.challenger = row.mode = row.percent = row.challenger_since = None
    row.updated_at = now
    _record(session, row, who, "promote", old, new, reason)
    session.commit()
    return _release(row)


def rollback(
    session: Session,
    model_name: str,
    *,
    file_version: str | None,
    who: str,
    reason: str,
    now: datetime,
    action: str = "rollback",
    expected: tuple[str, datetime | None] | None = None,
) -> Release:
    """Undo the last step toward a new version; commits. A challenger is cleared (the
    champion stays); without one, the champion before the last promotion comes back.
    ReleaseRefused when there is neither, or when `expected` (challenger, since) is given
    and the release no longer has that challenger since then (a guard's rollback must not
    undo a change made meanwhile)."""
    row = _locked(session, model_name)
    if expected is not None and (row.challenger, row.challenger_since) != expected:
        session.rollback()
        raise ReleaseRefused(f"{model_name}'s challenger changed meanwhile")
    if row.challenger is not None:
        old, new = row.challenger, row.champion or file_version
        row.challenger = row.mode = row.percent = row.challenger_since = None
    elif row.previous_champion is not None:
        old, new = row.champion or file_version, row.previous_champion
        row.champion, row.previous_champion = row.previous_champion, None
    else:
        session.rollback()
        raise ReleaseRefused(f"{model_name} has neither a challenger nor a previous champion to roll back to")
    row.updated_at = now
    _record(session, row, who, action, old, new, reason)
    session.commit()
    return _release(row)


def history(session: Session, model_name: str, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
    """The release's changes, newest first."""
    rows = session.scalars(
        select(ModelReleaseChange)
        .where(ModelReleaseChange.model_name == model_name)
        .order_by(ModelReleaseChange.at.desc(), ModelReleaseChange.id.desc())
        .limit(limit)
    )
    return [
        {
            "at": row.at,
            "who": row.who,
            "action": row.action,
            "from": row.from_version,
            "to": row.to_version,
            "mode": row.mode,
            "percent": row.percent,
            "reason": row.reason,
        }
        for row in rows
    ]
