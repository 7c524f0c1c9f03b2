"""Where frames are made: one engine singleton per model, three ways to run it behind one interface.

* ``cpu``: the small embedded model, eager, frame loop in the Gradio worker thread.
* ``cuda``: a local GPU; the engine compiles its DiT at warm-up (persistent inductor cache) and
  one engine thread owns the GPU, because compiled kernels and CUDA graphs belong to the thread
  that built them.
* ``zerogpu``: Hugging Face ZeroGPU; each stretch of play is a ``@spaces.GPU`` generator of bounded
  duration running in a forked worker that reads controls from shared memory, encodes JPEGs there
  and rebuilds the world from the kept frames when it lands on a fresh worker.

``spaces.GPU`` is the identity off ZeroGPU, so the same code runs everywhere. Weights are loaded
once per model and shared; every browser session plays its own ``engine.fork()``.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import spaces
import torch

from player.reality import REALITY, Reality
from player.sessions import BOARD, MAX_SLOTS
from player.stream import Frame, Notice, SegmentArgs, WorldCache, WorldSpec, run_segment

WAYPOINT_SMALL = "Overworld/Waypoint-1-Small"


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker: the browser only ever sends ``key``."""

    key: str
    label: str
    uri: str | None      # what WorldEngine(model=...) gets; None is the embedded model


def detect_kind() -> str:
    if spaces.config.Config.zero_gpu:
        return "zerogpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_catalog(extra_models: list[str], kind: str) -> list[ModelChoice]:
    """The allow-list: models named on the CLI, the embedded model, Waypoint-1-Small on a GPU, and
    the simulator itself ("reality")."""
    from world_engine.engine import EMBEDDED_MODEL

    choices = []
    for uri in extra_models:
        name = Path(uri).name if Path(uri).expanduser().is_dir() else uri
        choices.append(ModelChoice(key=uri, label=f"{name} (--model)", uri=uri))
    if (EMBEDDED_MODEL / "config.yaml").is_file():
        choices.append(ModelChoice(key="embedded", label="Tiny world (embedded, runs on CPU)", uri=None))
    if kind != "cpu" and WAYPOINT_SMALL not in extra_models:
        choices.append(ModelChoice(key=WAYPOINT_SMALL, label="Waypoint-1-Small (GPU)", uri=WAYPOINT_SMALL))
    choices.append(ModelChoice(key=REALITY, label="Reality: the simulator the tiny model learned", uri=REALITY))
    return choices


class WarmUp:
    """Progress of building and warming the default engine, readable from any thread."""

    def __init__(self) -> None:
        self.fraction = 0.0
        self.text = "starting"
        self.error: str | None = None
        self.done = threading.Event()

    def update(self, fraction: float, text: str) -> None:
        self.fraction, self.text = fraction, text


class Backend:
    """Loads engines (cached) and runs frame-loop segments on the CPU, a local GPU or ZeroGPU."""

    def __init__(self, kind: str, segment_seconds: float) -> None:
        self.kind = kind
        self.device = "cuda" if kind in ("cuda", "zerogpu") else "cpu"
        self.segment_seconds = segment_seconds
        self.worlds = WorldCache(MAX_SLOTS)
        self.warmup = WarmUp()
        self._engine_lock = threading.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="engine") if kind == "cuda" else None
        if kind == "cuda":
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR",
                                  str(Path.home() / ".cache" / "world-player" / "inductor"))
            os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")

    def engine(self, uri: str | None):
        """The shared engine (weights) of a model; built once, even when two sessions ask at once."""
        with self._engine_lock:
            return self._load_engine(uri)

    @functools.lru_cache(maxsize=4)
    def _load_engine(self, uri: str | None):
        if uri == REALITY:
            return Reality()
        from world_engine import WorldEngine

        # ZeroGPU forks a fresh worker per GPU allocation, so a JIT compile would rerun there.
        return WorldEngine(model=uri, device=self.device, compile=self.kind == "cuda")

    def warm_up(self, choices: list[ModelChoice]) -> None:
        """Build the default engine (on ZeroGPU: every engine, so the weights are packed before the
        first GPU fork) and run a few frames (compiling on CUDA); report progress."""
        from world_engine import CtrlInput

        try:
            todo = choices if self.kind == "zerogpu" else choices[:1]
            for i, choice in enumerate(todo):
                self.warmup.update(0.05 + 0.25 * i / len(todo), f"loading {choice.label}")
                engine = self._call(self.engine, choice.uri)
            if self.kind != "zerogpu":
                probe = engine.fork(seed=0)
                for i in range(3):
                    self.warmup.update(0.3 + 0.2 * i, "compiling" if self.kind == "cuda" else "warming up")
                    self._call(probe.gen_frame, CtrlInput())
            self.warmup.update(1.0, "ready")
        except Exception as exc:  # shown in the status line; the app keeps serving other models
            self.warmup.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.warmup.done.set()

    def new_engine(self, world: WorldSpec, uri: str | None):
        return self.engine(uri).fork(seed=world.seed)

    def forget(self, key: str) -> None:
        self.worlds.drop(key)

    def segments(self, args: SegmentArgs, uri: str | None) -> Iterator[Frame | Notice]:
        """Run one segment where this backend runs engines."""
        if self.kind == "zerogpu" and uri != REALITY:
            yield from _gpu_segment(args, uri)
            return
        gen = run_segment(args, BOARD, self.worlds, lambda w: self.new_engine(w, uri))
        while (item := self._call(next, gen, None)) is not None:
            yield item

    def _call(self, fn: Callable, *args):
        """Run ``fn`` on the engine thread (CUDA) or right here."""
        if self._thread is None:
            return fn(*args)
        return self._thread.submit(fn, *args).result()


# ZeroGPU: module level, decorated at import so the worker forked at the first call inherits it.
_ZERO_BACKEND: Backend | None = None


def _segment_duration(args: SegmentArgs, uri: str | None) -> int:
    return int(min(args.max_seconds, 300) + 30)   # + time to fork, load and re-prime


@spaces.GPU(duration=_segment_duration)
def _gpu_segment(args: SegmentArgs, uri: str | None) -> Iterator[Frame | Notice]:
    backend = _ZERO_BACKEND
    yield from run_segment(args, BOARD, backend.worlds, lambda w: backend.new_engine(w, uri))


def create_backend(kind: str, segment_seconds: float) -> Backend:
    global _ZERO_BACKEND
    backend = Backend(kind, segment_seconds)
    if kind == "zerogpu":
        _ZERO_BACKEND = backend
    return backend
