"""/api/v1/ml/models/<name>/{versions, release, promote, rollback, releases}, and the same
changes for `flask --app web models release|promote|rollback`.

A release is kept in the database (`db.releases`), so every web process and worker sees
one release; the workers read it on each model-watch tick and route by it
(`tasks.worker.releases`). Each change is written with who made it and why.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, model_validator
from sqlalchemy.exc import SQLAlchemyError

from db import Release, ReleaseRefused, database
from db import releases as stored
from db.compare import compare
from tasks.web_clients import PredictionClient
from web.errors import ApiError, database_unavailable
from web.inputs import body_as, query
from web.model_versions import current_version, file_name, known_version, threshold_of, version_entries
from web.openapi import responses as r
from web.openapi.declare import Answer, documented
from web.schemas import QueryDatetime

blueprint = Blueprint("releases", __name__)
blueprint.register_error_handler(SQLAlchemyError, database_unavailable)

NAME_PATH = {"name": {"type": "string", "minLength": 1, "maxLength": 255, "examples": ["xgboost_model.json"]}}
API_WHO = "api"  # the API token's holder: the one token there is

Reason = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class ReleaseChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    challenger: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)] | None
    mode: Literal["shadow", "canary"] | None = None
    percent: Annotated[int, Strict(), Field(ge=1, le=100)] | None = None
    guards: r.Guards | None = None
    reason: Reason

    @model_validator(mode="after")
    def _mode_fits(self) -> ReleaseChange:
        if self.challenger is not None and self.mode is None:
            raise ValueError("a challenger needs a mode: shadow or canary")
        if self.mode == "canary" and self.percent is None:
            raise ValueError("a canary needs a percent, 1-100")
        if self.mode == "shadow" and self.percent is not None:
            raise ValueError("percent is for a canary; a shadow runs on every request")
        return self


class CompareQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    challenger: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="a kept version; the release's challenger when omitted"
    )
    since: QueryDatetime | None = Field(
        default=None, description="the window's start; when the challenger was set when omitted"
    )
    until: QueryDatetime | None = Field(default=None, description="the window's end (now when omitted)")


class ReasonOnly(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


def _client() -> PredictionClient:
    return current_app.extensions["predictions"]


def release_body(release: Release | None, file_version: str | None) -> dict[str, Any]:
    release = release or Release(model_name="", champion=None)
    return {
        "champion": release.champion_or(file_version),
        "pinned": release.champion is not None,
        "challenger": release.challenger,
        "mode": release.mode,
        "percent": release.percent,
        "guards": release.guards,
        "challenger_since": release.challenger_since,
        "previous_champion": release.previous_champion,
    }


def change_release(name: str, change: ReleaseChange, who: str) -> dict[str, Any]:
    """Set or clear the challenger of `name`; 404 for a version that is not kept."""
    name = file_name(name)
    if change.challenger is not None and not known_version(name, change.challenger):
        raise ApiError(
            404,
            "version_not_found",
            f"{name} has no kept version {change.challenger!r}; GET its versions for the ones there are",
            {"model_version": change.challenger},
        )
    release = stored.set_challenger(
        database.session,
        name,
        challenger=change.challenger,
        mode=change.mode if change.challenger is not None else None,
        percent=change.percent,
        guards=None if change.guards is None else change.guards.model_dump(exclude_none=True),
        who=who,
        reason=change.reason,
        now=datetime.now(UTC),
        threshold=threshold_of(name),
    )
    return release_body(release, current_version(name))


def promote(name: str, reason: str, who: str) -> dict[str, Any]:
    """The challenger becomes champion, once every live predict process holds it (else 409)."""
    name = file_name(name)
    release = stored.release_of(database.session, name)
    if release is None or release.challenger is None:
        raise ApiError(409, "no_challenger", f"{name} has no challenger to promote")
    wanted = f"{name}@{release.challenger}"
    live = _client().live_workers()
    lacking = sorted(worker for worker, held in live.items() if wanted not in held)
    if not live or lacking:
        raise ApiError(
            409,
            "challenger_not_loaded",
            f"{release.challenger} is not loaded on every live predict worker yet"
            if live
            else "no live predict worker answers; the challenger cannot be checked",
            {"lacking": lacking, "live": sorted(live)},
        )
    return _changed(functools.partial(stored.promote, expected=release.challenger), name, reason, who)


def rollback(name: str, reason: str, who: str) -> dict[str, Any]:
    """Clear the challenger, or restore the champion before the last promotion."""
    return _changed(stored.rollback, file_name(name), reason, who)


def _changed(change: Any, name: str, reason: str, who: str) -> dict[str, Any]:
    file_version = current_version(name)
    try:
        release = change(
            database.session, name, file_version=file_version, who=who, reason=reason, now=datetime.now(UTC)
        )
    except ReleaseRefused as refused:
        raise ApiError(409, "nothing_to_change", str(refused)) from None
    return release_body(release, file_version)


_ERRORS = (400, 401, 404, 503)


@blueprint.get("/models/<name>/versions")
@documented(
    operation_id="listModelVersions",
    summary="A model's kept versions",
    tag="releases",
    answers={200: Answer("the versions, newest first", r.ModelVersions)},
    errors=_ERRORS,
    path=NAME_PATH,
    description="Every version that served the name is kept (MODEL_VERSIONS_KEPT newest, and "
    "every version a release names) and can be asked for with `model_version`.",
)
def list_versions(name: str):
    return jsonify(versions=version_entries(file_name(name)))


@blueprint.get("/models/<name>/release")
@documented(
    operation_id="getRelease",
    summary="A model's release",
    tag="releases",
    answers={200: Answer("the release", r.Release)},
    errors=_ERRORS,
    path=NAME_PATH,
)
def get_release(name: str):
    name = file_name(name)
    return jsonify(release_body(stored.release_of(database.session, name), current_version(name)))


@blueprint.put("/models/<name>/release")
@documented(
    operation_id="setRelease",
    summary="Set or clear a model's challenger",
    tag="releases",
    answers={200: Answer("the new release", r.Release)},
    errors=(*_ERRORS, 422),
    path=NAME_PATH,
    body=ReleaseChange,
    description="`challenger: null` clears it. `shadow`: the challenger runs every champion "
    "request after the answer, logged only; `canary`: it answers `percent` % of requests, "
    "sticky on `X-Routing-Key`. Every worker follows within one model-watch tick (2 s).",
)
def set_release(name: str):
    return jsonify(change_release(name, body_as(ReleaseChange.model_validate), API_WHO))


# promote and rollback: a reason in, the new release out.
_REASONED_CHANGE = {
    "tag": "releases",
    "answers": {200: Answer("the new release", r.Release)},
    "errors": (*_ERRORS, 409, 422),
    "path": NAME_PATH,
    "body": ReasonOnly,
}


@blueprint.post("/models/<name>/promote")
@documented(
    operation_id="promoteChallenger",
    summary="The challenger becomes champion",
    **_REASONED_CHANGE,
    description="409 `challenger_not_loaded` (with `details.lacking`, the live workers that "
    "do not hold it) or `no_challenger`.",
)
def promote_challenger(name: str):
    return jsonify(promote(name, body_as(ReasonOnly.model_validate).reason, API_WHO))


@blueprint.post("/models/<name>/rollback")
@documented(
    operation_id="rollbackRelease",
    summary="Roll a release back",
    **_REASONED_CHANGE,
    description="Clears the challenger; without one, restores the champion before the last "
    "promotion. 409 `nothing_to_change` when there is neither.",
)
def rollback_release(name: str):
    return jsonify(rollback(name, body_as(ReasonOnly.model_validate).reason, API_WHO))


@blueprint.get("/models/<name>/releases")
@documented(
    operation_id="listReleaseChanges",
    summary="A release's history",
    tag="releases",
    answers={200: Answer("every change, newest first", r.ReleaseHistory)},
    errors=_ERRORS,
    path=NAME_PATH,
)
def release_history(name: str):
    return jsonify(changes=stored.history(database.session, file_name(name)))


@blueprint.get("/models/<name>/compare")
@documented(
    operation_id="compareChallenger",
    summary="A challenger against its champion",
    tag="releases",
    answers={200: Answer("the comparison", r.Comparison)},
    errors=(*_ERRORS, 504),
    path=NAME_PATH,
    query=CompareQuery,
    description="Over the shadow pairs (the same input, both predictions) logged in the window: "
    "agreement at the model's `decision_threshold` (its sidecar's, else 0.5), mean absolute "
    "difference, correlation; over the closed trades linked to the champion's side of them: "
    "accuracy, Brier score and log-loss against `won` per side, the PnL of the trades the "
    "challenger would also have taken and of those it would have declined, and a paired "
    "bootstrap interval of the Brier difference with its verdict. 400 `no_challenger` when "
    "the release has none and none is named, or no window start is known.",
)
def compare_challenger(name: str):
    name = file_name(name)
    asked = query(CompareQuery)
    release = stored.release_of(database.session, name)
    challenger = asked.challenger or (release.challenger if release else None)
    since = asked.since
    if since is None and release is not None and challenger == release.challenger:
        since = release.challenger_since
    if challenger is None or since is None:
        raise ApiError(
            400,
            "no_challenger",
            f"{name} has no challenger now: name one (challenger=<version>) and the window (since=...)",
        )
    return jsonify(
        compare(
            database.session, name, challenger, since=since, until=asked.until, threshold=threshold_of(name)
        )
    )
