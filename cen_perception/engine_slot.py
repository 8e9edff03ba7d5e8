"""The node's engines without ROS: opening one, changing it live, closing it only when unused.

``load_engine`` opens and checks an engine for the node. ``EngineSlot`` holds the engine in
service and changes it while the node runs: ``request`` opens a new one on a thread of its own
(so parameter and lifecycle services answer at once), the worker swaps it in between frames
with ``swap``, and every engine is closed only once no frame uses it any more (``LoadedEngine``
counts its users), whatever order deactivate, cleanup and a pending change come in.
"""
from __future__ import annotations

import datetime
import pathlib
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .engines import TENSORRT_SUFFIXES, Engine, EngineError, open_engine
from .errors import CenPerceptionError
from .model_card import ModelCardError
from .segmenter import Segmenter
from .visualize import palette_lut


class StartupError(CenPerceptionError):
    """The node cannot start (or configure, or take a new engine); one line for the user."""


@dataclass
class LoadedEngine:
    """An open engine with what the worker needs of it; swapped whole, never piecemeal."""

    engine: Engine
    segmenter: Segmenter
    palette_lut: np.ndarray
    path: str
    loaded_at: str    # local time, ISO 8601
    _users: int = field(default=0, repr=False)
    _retired: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def card(self):
        return self.engine.card

    def describe(self) -> dict[str, str]:
        """What /diagnostics says of it."""
        h, w = self.engine.input_size
        return {"backend": self.engine.backend, "engine": self.path,
                "engine_loaded": self.loaded_at, "input_size": f"{w}x{h}",
                "precision": self.card.precision}

    def acquire(self) -> bool:
        """Count one more user (a frame); False once retired."""
        with self._lock:
            if self._retired:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self.engine.close()

    def retire(self) -> None:
        """No new users; the engine closes now, or when its last frame ends."""
        with self._lock:
            if self._retired:
                return
            self._retired = True
            close = self._users == 0
        if close:
            self.engine.close()


def load_engine(path: str, backend: str, num_threads: int, min_confidence: float,
                publish_confidence: bool) -> LoadedEngine:
    """Open and check an engine for the node; ``StartupError`` says why it cannot serve."""
    if not path:
        raise StartupError("parameter engine_path is required (an exported .onnx model or a "
                           "TensorRT engine)")
    resolved_path = pathlib.Path(path).expanduser()
    resolved = backend if backend != "auto" else (
        "tensorrt" if resolved_path.suffix in TENSORRT_SUFFIXES else "onnxruntime")
    # Spinning ORT threads would take the cores the node needs to decode and publish.
    options = ({"threads": num_threads, "spin_wait": False} if resolved == "onnxruntime" else {})
    try:
        engine = open_engine(resolved_path, backend, **options)
    except (EngineError, ModelCardError) as exc:
        raise StartupError(str(exc)) from None
    try:
        segmenter = Segmenter(engine, min_confidence=min_confidence)
        if publish_confidence and not engine.has_confidence:
            raise ValueError("publish_confidence is true but the engine has no 'confidence' "
                             "output")
    except ValueError as exc:
        engine.close()
        raise StartupError(f"{exc} ({path})") from None
    loaded_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return LoadedEngine(engine, segmenter, palette_lut(engine.card.palette), str(path), loaded_at)


@dataclass(frozen=True)
class Outcome:
    """How a requested engine change ended: ``error`` is empty when it is ready to serve."""

    path: str
    error: str = ""
    class_names: tuple = ()


class EngineSlot:
    """The engine in service, the one opening in the background, the one ready to swap in.

    ``opener(path)`` opens an engine (``load_engine`` with the node's parameters) or raises
    ``StartupError``; ``notify()`` is called from the loading thread when an outcome waits in
    ``outcomes()`` (the node wakes its executor with it).
    """

    def __init__(self, opener: Callable[[str], LoadedEngine], notify: Callable[[], None]) -> None:
        self._opener = opener
        self._notify = notify
        self._lock = threading.Lock()
        self._generation = 0         # bumped by close(): late loads of an earlier life close
        self._requested = 0          # the newest request's number; older ones are superseded
        self._loading = ""           # path being opened, "" when none
        self._pending: Optional[LoadedEngine] = None
        self._outcomes: list[Outcome] = []
        self.in_service: Optional[LoadedEngine] = None

    def open_now(self, path: str) -> LoadedEngine:
        """Open ``path`` here and put it in service (configure); raises ``StartupError``."""
        loaded = self._opener(path)
        with self._lock:
            old, self.in_service = self.in_service, loaded
        if old is not None:
            old.retire()
        return loaded

    @property
    def loading(self) -> str:
        return self._loading

    def describe(self) -> dict[str, str]:
        """The engine in service for ``/diagnostics`` (nothing without one)."""
        loaded = self.in_service
        return loaded.describe() if loaded is not None else {}

    def request(self, path: str) -> None:
        """Open ``path`` on a thread of its own; a newer request supersedes it."""
        with self._lock:
            self._requested += 1
            ticket, generation = self._requested, self._generation
            self._loading = path
        threading.Thread(target=self._load, args=(path, ticket, generation),
                         name="engine_loader", daemon=True).start()

    def _load(self, path: str, ticket: int, generation: int) -> None:
        try:
            loaded, error = self._opener(path), ""
        except StartupError as exc:
            loaded, error = None, str(exc)
        except Exception as exc:  # an engine that fails in an unforeseen way is refused too
            loaded, error = None, f"{path}: {type(exc).__name__}: {exc}"
        with self._lock:
            current = ticket == self._requested and generation == self._generation
            if current:
                self._loading = ""
                if loaded is not None:
                    stale, self._pending = self._pending, loaded
                    names = tuple(loaded.card.class_names)
                    self._outcomes.append(Outcome(path, class_names=names))
                    loaded = stale
                else:
                    self._outcomes.append(Outcome(path, error=error))
        if loaded is not None:   # superseded, closed meanwhile, or replaced as pending
            loaded.retire()
        if current:
            self._notify()

    def cancel(self) -> None:
        """Forget a requested change; the engine in service stays. A load still running
        closes its engine when it ends; one ready to swap in is retired."""
        with self._lock:
            self._requested += 1
            self._loading = ""
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.retire()

    def outcomes(self) -> list[Outcome]:
        """Outcomes of requests since the last call, oldest first."""
        with self._lock:
            taken, self._outcomes = self._outcomes, []
        return taken

    def swap(self) -> Optional[LoadedEngine]:
        """Put a ready engine in service (between frames); the old one is retired."""
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is None:
                return None
            old, self.in_service = self.in_service, pending
        if old is not None:
            old.retire()
        return pending

    def acquire(self) -> Optional[LoadedEngine]:
        """The engine in service, counted as used until ``release()``; None when there is none."""
        loaded = self.in_service
        return loaded if loaded is not None and loaded.acquire() else None

    def close(self) -> None:
        """Retire every engine; loads still running close theirs when they end."""
        with self._lock:
            self._generation += 1
            self._loading = ""
            engines = [self._pending, self.in_service]
            self._pending = self.in_service = None
            self._outcomes = []
        for loaded in engines:
            if loaded is not None:
                loaded.retire()
