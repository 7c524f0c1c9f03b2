"""Where frames are made: one engine per model, shared by every session, and one backend per kind
of machine that runs the sessions' frame loops.

* ``Backend`` (CPU): the small embedded model, eager, frame loop in the Gradio worker thread.
* ``CudaBackend``: a local GPU; the engine compiles its DiT at warm-up (persistent inductor cache)
  and one engine thread owns the GPU, because compiled kernels and CUDA graphs belong to the thread
  that built them.
* ``ZeroGpuBackend``: Hugging Face ZeroGPU; each stretch of play is a ``@spaces.GPU`` generator of
  bounded duration running in a forked worker that reads controls from shared memory, encodes JPEGs
  there and rebuilds the world from the kept frames when it lands on a fresh worker.

``spaces.GPU`` is the identity off ZeroGPU, so the same code runs everywhere. Engines are
``world_engine.protocol.WorldSource`` objects; every browser session plays its own ``fork()``.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import spaces
import torch

from player.reality import REALITY, Reality
from player.sessions import BOARD, MAX_SLOTS
from player.stream import EncodedFrame, Notice, ResidentWorlds, SegmentArgs, WorldRecipe, run_segment
from world_engine.controls import CtrlInput
from world_engine.protocol import InteractiveWorld, WorldSource

WAYPOINT_SMALL = "Overworld/Waypoint-1-Small"
QUOTA_MESSAGE = ("Your ZeroGPU quota is used up for now. Sign in or upgrade for more GPU time, come back "
                 "later, or run the app locally with `python app.py`.")


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


class EngineCache:
    """The shared engine (weights) of each model: built once, even when two sessions ask at once."""

    def __init__(self, device: str, compile: bool, capacity: int = 4) -> None:
        self.device, self.compile, self.capacity = device, compile, capacity
        self._engines: OrderedDict[str | None, WorldSource] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uri: str | None) -> WorldSource:
        with self._lock:
            if uri not in self._engines:
                self._engines[uri] = self._load(uri)
                while len(self._engines) > self.capacity:
                    self._engines.popitem(last=False)
            self._engines.move_to_end(uri)
            return self._engines[uri]

    def _load(self, uri: str | None) -> WorldSource:
        if uri == REALITY:
            return Reality()
        from world_engine import WorldEngine

        return WorldEngine(model=uri, device=self.device, compile=self.compile)


class WarmUp:
    """Progress of getting the engines ready, readable from any thread."""

    def __init__(self) -> None:
        self.fraction = 0.0
        self.text = "starting"
        self.error: str | None = None
        self.done = threading.Event()

    def update(self, fraction: float, text: str) -> None:
        self.fraction, self.text = fraction, text


class Backend:
    """Runs frame-loop segments in the calling thread (the CPU backend; the GPU ones override).

    Owns the engines, the sessions' resident worlds and the warm-up progress.
    """

    kind = "cpu"
    device = "cpu"
    compiles = False
    warm_text = "warming up"

    def __init__(self, segment_seconds: float) -> None:
        self.segment_seconds = segment_seconds
        self.engines = EngineCache(self.device, compile=self.compiles)
        self.worlds = ResidentWorlds(MAX_SLOTS)
        self.warmup = WarmUp()

    def warm_up(self, choices: list[ModelChoice]) -> None:
        """Get the engines ready (``_prepare``); a failure shows in the status line and the app keeps
        serving the other models."""
        try:
            self._prepare(choices)
            self.warmup.update(1.0, "ready")
        except Exception as exc:
            self.warmup.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.warmup.done.set()

    def _prepare(self, choices: list[ModelChoice]) -> None:
        """Build the default engine and run a few frames (compiling on CUDA)."""
        self.warmup.update(0.05, f"loading {choices[0].label}")
        engine = self.call(self.engines.get, choices[0].uri)
        probe = engine.fork(seed=0)
        for i in range(3):
            self.warmup.update(0.3 + 0.2 * i, self.warm_text)
            self.call(probe.next_frame, CtrlInput())
        probe.close()

    def open_world(self, uri: str | None, recipe: WorldRecipe) -> InteractiveWorld:
        return self.engines.get(uri).fork(seed=recipe.seed)

    def segments(self, args: SegmentArgs, uri: str | None) -> Iterator[EncodedFrame | Notice]:
        """Run one segment of the session's world of model ``uri``."""
        gen = run_segment(args, BOARD, self.worlds, functools.partial(self.open_world, uri))
        while (item := self.call(next, gen, None)) is not None:
            yield item

    def call(self, fn: Callable, *args):
        """Run ``fn`` where this backend runs engine code."""
        return fn(*args)

    def hud_note(self, seconds_into_segment: float) -> str:
        """Extra text for the frame overlay."""
        return ""

    def forget(self, key: str) -> None:
        """Close the session's resident world."""
        self.worlds.drop(key)


class CudaBackend(Backend):
    """A local GPU, owned by one engine thread; the DiT compiles at warm-up."""

    kind = "cuda"
    device = "cuda"
    compiles = True
    warm_text = "compiling"

    def __init__(self, segment_seconds: float) -> None:
        super().__init__(segment_seconds)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="engine")
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "world-player" / "inductor"))
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")

    def call(self, fn: Callable, *args):
        return self._thread.submit(fn, *args).result()


class ZeroGpuBackend(Backend):
    """Hugging Face ZeroGPU: segments run as ``@spaces.GPU`` generators in a forked GPU worker.

    The decorated segment is a bound method wrapped before the first GPU call, so the worker forked
    at that call inherits this backend (its engines and resident worlds) and only the segment's
    arguments travel. Weights load eagerly (``spaces`` packs them at launch) and nothing compiles:
    a JIT compile would rerun in every fresh worker.
    """

    kind = "zerogpu"
    device = "cuda"

    def __init__(self, segment_seconds: float) -> None:
        super().__init__(segment_seconds)
        self._gpu_segment = spaces.GPU(duration=self._segment_duration)(self._segment_in_worker)

    def _prepare(self, choices: list[ModelChoice]) -> None:
        """Load every engine before the first GPU fork; run no frames (there is no GPU here)."""
        for i, choice in enumerate(choices):
            self.warmup.update(0.05 + 0.25 * i / len(choices), f"loading {choice.label}")
            self.engines.get(choice.uri)

    def segments(self, args: SegmentArgs, uri: str | None) -> Iterator[EncodedFrame | Notice]:
        """GPU engines run in the worker; a world computed on the host (the simulator) runs here."""
        if self.engines.get(uri).device.type != "cuda":
            yield from super().segments(args, uri)
            return
        try:
            yield from self._gpu_segment(args, uri)
        except gr.Error as exc:
            if not _is_quota_error(exc):
                raise
            yield Notice("quota", QUOTA_MESSAGE, state="GPU quota exhausted")

    def _segment_duration(self, args: SegmentArgs, uri: str | None) -> int:
        return int(min(args.max_seconds, 300) + 30)   # + time to fork, load and re-prime

    def _segment_in_worker(self, args: SegmentArgs, uri: str | None) -> Iterator[EncodedFrame | Notice]:
        yield from run_segment(args, BOARD, self.worlds, functools.partial(self.open_world, uri))

    def hud_note(self, seconds_into_segment: float) -> str:
        return f" \u00b7 GPU {max(0.0, self.segment_seconds - seconds_into_segment):.0f} s"


def _is_quota_error(exc: gr.Error) -> bool:
    """``spaces`` reports a used-up quota as a plain ``gr.Error`` ("ZeroGPU quota exceeded")."""
    return "quota" in str(exc).lower() or "quota" in str(getattr(exc, "title", "")).lower()


BACKENDS: dict[str, type[Backend]] = {"cpu": Backend, "cuda": CudaBackend, "zerogpu": ZeroGpuBackend}


def create_backend(kind: str, segment_seconds: float) -> Backend:
    return BACKENDS[kind](segment_seconds)
