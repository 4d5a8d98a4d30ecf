"""Each predict worker process looks at MODEL_DIR every few seconds on its own.

A model dropped in under a new name is loaded, and a replaced file's new version too,
without waiting for a prediction to ask for it: /readyz then counts the new model as
loaded within seconds, and no caller pays a model's load time. A file that failed to
load is not tried again until it changes (the store remembers the failure per version).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from models import ModelStore

log = logging.getLogger(__name__)

WATCH_EVERY_S = 2.0


class ModelWatch:
    def __init__(
        self,
        store: ModelStore,
        loaded: Callable[[], None],
        every_s: float = WATCH_EVERY_S,
        before_look: Callable[[], None] | None = None,
    ):
        self._store = store
        self._loaded = loaded  # called after each look: reports what this process holds
        self._before_look = before_look  # the releases: which versions to hold besides the files
        self._every_s = every_s
        self._stopping = threading.Event()
        self._told: dict[str, str] = {}  # name -> the failure last logged
        self._thread = threading.Thread(target=self._run, name="model-watch", daemon=True)

    def start(self) -> ModelWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()

    def look(self) -> None:
        """Load what is new or changed in the directory, drop what left it, and report."""
        if self._before_look is not None:
            self._before_look()
        outcome = self._store.preload()
        for name, error in outcome.items():
            if error and self._told.get(name) != error:
                log.warning("model %s not loaded: %s", name, error)
            elif not error and name in self._told:
                log.info("model %s loaded", name)
        self._told = {name: error for name, error in outcome.items() if error}
        self._loaded()

    def _run(self) -> None:
        while not self._stopping.wait(self._every_s):
            try:
                self.look()
            except Exception:  # the next look tries again; serving goes on meanwhile
                log.exception("looking at the model directory failed")
