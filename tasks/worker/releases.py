"""Which version of a model answers a prediction: the worker's one place that decides.

The releases live in the database (`db.releases`); every predict process reads them on
each model-watch tick and keeps the last it read, so a database outage changes nothing
about routing (the last known releases hold), and a change made anywhere holds in every
worker within a tick. A prediction is routed here whether it came over the direct lane or
as an `ml.predict` task from a bot:

- `model_version` given: that version answers, role `pinned`;
- a canary challenger: `percent` % of requests, chosen by a stable hash of the
  `X-Routing-Key` (the same key always lands on the same side, in every process), else
  drawn at random per request;
- otherwise the champion (the pinned version, or the file's current one); with a shadow
  challenger the request is also run by the challenger after its caller has the answer.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass

from flask import Flask

from db import Release, database
from db.releases import releases
from tasks.worker.guards import Experiment, experiment_of

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, SHADOW, PINNED = "champion", "challenger", "shadow", "pinned"


@dataclass(frozen=True)
class Route:
    version: str | None  # None: the file's current version
    role: str
    # The challenger's: the one a canary's share is answered by, or (for the champion) the
    # shadow that runs the same input afterwards.
    experiment: Experiment | None = None

    @property
    def shadow(self) -> Experiment | None:
        return self.experiment if self.role == CHAMPION else None


def canary_bucket(model_name: str, routing_key: str) -> int:
    """0-99, the same for a key and model in every process (Python's hash() is salted)."""
    digest = hashlib.blake2b(f"{model_name}\0{routing_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def route(release: Release | None, model_name: str, version: str | None, routing_key: str | None) -> Route:
    if version is not None:
        return Route(version, PINNED)
    if release is None:
        return Route(None, CHAMPION)
    if release.challenger is not None and release.mode == "canary":
        bucket = canary_bucket(model_name, routing_key) if routing_key else random.randrange(100)  # noqa: S311 - a traffic split, not a secret
        if bucket < (release.percent or 0):
            return Route(release.challenger, CHALLENGER, experiment_of(release))
    if release.mode == "shadow":
        return Route(release.champion, CHAMPION, experiment_of(release))
    return Route(release.champion, CHAMPION)


class ReleaseBook:
    """The releases as this process last read them."""

    def __init__(self, flask_app: Flask):
        self._flask_app = flask_app
        self._releases: dict[str, Release] = {}
        self._failing = False

    def refresh(self) -> dict[str, Release]:
        """Read them again; on a database error keep the last read (logged once per outage)."""
        try:
            with self._flask_app.app_context():
                try:
                    self._releases = releases(database.session)
                finally:
                    database.session.remove()
        except Exception as exc:
            if not self._failing:
                log.warning("model releases not read (the last read holds): %s", exc)
            self._failing = True
        else:
            if self._failing:
                log.info("model releases read again")
            self._failing = False
        return self._releases

    def any(self) -> bool:
        return bool(self._releases)

    def get(self, model_name: str) -> Release | None:
        return self._releases.get(model_name)

    def held(self) -> set[tuple[str, str]]:
        """(name, version) of every version a release names: the pinned champion, the
        challenger, and the champion a rollback restores (so that it answers at once).
        Held loaded, and never pruned from the archive."""
        return {(name, version) for name, release in self._releases.items() for version in release.versions()}
