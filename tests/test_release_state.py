"""A release's state and history in PostgreSQL (`db.releases`): each change and its line in
`model_releases` together, and the conditional changes that concurrent actors rely on (a
promotion of the challenger that was checked, a guard's rollback of the experiment it judged)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from db import ReleaseRefused
from db import releases as stored

NAME = "m.json"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


@pytest.fixture
def session(engine):
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE model_release_state, model_releases"))
    with Session(engine) as session:
        yield session


def shadow(session: Session, version: str, at: datetime = NOW):
    return stored.set_challenger(
        session,
        NAME,
        challenger=version,
        mode="shadow",
        percent=None,
        guards=None,
        who="t",
        reason="r",
        now=at,
    )


def test_a_challenger_promoted_and_rolled_back_with_every_change_recorded(session):
    assert stored.release_of(session, NAME) is None
    release = shadow(session, "b" * 16)
    assert (release.champion, release.challenger, release.challenger_since) == (None, "b" * 16, NOW)
    release = stored.promote(session, NAME, file_version="a" * 16, who="t", reason="won", now=NOW)
    assert (release.champion, release.previous_champion, release.challenger) == ("b" * 16, "a" * 16, None)
    release = stored.rollback(session, NAME, file_version="c" * 16, who="t", reason="lost", now=NOW)
    assert (release.champion, release.previous_champion) == ("a" * 16, None)
    with pytest.raises(ReleaseRefused):
        stored.rollback(session, NAME, file_version="c" * 16, who="t", reason="again", now=NOW)
    history = stored.history(session, NAME)
    assert [(c["action"], c["from"], c["to"]) for c in history] == [
        ("rollback", "b" * 16, "a" * 16),
        ("promote", "a" * 16, "b" * 16),
        ("release", None, "b" * 16),
    ]


def test_a_promotion_refuses_a_challenger_changed_since_it_was_checked(session):
    shadow(session, "b" * 16)
    shadow(session, "d" * 16)  # someone else's change, after the workers were asked about b
    with pytest.raises(ReleaseRefused, match="changed"):
        stored.promote(session, NAME, file_version="a" * 16, who="t", reason="r", now=NOW, expected="b" * 16)
    assert stored.release_of(session, NAME).challenger == "d" * 16
    assert len(stored.history(session, NAME)) == 2  # the refusal wrote nothing


def test_a_guards_rollback_undoes_only_the_experiment_it_judged(session):
    judged = shadow(session, "b" * 16)
    # The same challenger and mode set again (new guards, say): the same experiment goes on.
    assert shadow(session, "b" * 16, NOW + timedelta(minutes=5)).challenger_since == NOW
    # Another mode is another experiment: the guard's judgement of the shadow no longer holds.
    later = NOW + timedelta(minutes=10)
    stored.set_challenger(
        session,
        NAME,
        challenger="b" * 16,
        mode="canary",
        percent=5,
        guards=None,
        who="t",
        reason="r",
        now=later,
    )
    with pytest.raises(ReleaseRefused):
        stored.rollback(
            session, NAME, file_version=None, who="guard", reason="r", now=later, action="guard",
            expected=(judged.challenger, judged.challenger_since),
        )  # fmt: skip
    current = stored.release_of(session, NAME)
    assert (current.mode, current.challenger_since) == ("canary", later)
    release = stored.rollback(
        session, NAME, file_version="a" * 16, who="guard", reason="r", now=later, action="guard",
        expected=(current.challenger, current.challenger_since),
    )  # fmt: skip
    assert release.challenger is None
    change = stored.history(session, NAME)[0]
    assert (change["action"], change["who"], change["from"], change["to"]) == (
        "guard",
        "guard",
        "b" * 16,
        "a" * 16,
    )
