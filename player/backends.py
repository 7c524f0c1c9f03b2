"""Where frames are made: one engine per model, shared by every session, and one backend per kind
of machine that runs the sessions' frame loops.

* ``Backend`` (CPU): the small embedded model, frame loop in the Gradio worker thread. It plays
  eager at once; with ``cpu_compile`` a background thread then compiles the default model
  (``WorldEngine.compile_step``, C++ from inductor) and every session switches to it mid-play,
  unless a timed probe frame shows it slower than eager on this CPU.
  With ``batch_sessions``, visitors of the default model who ask for frames at the same time get
  them from one batched forward (``world_engine.batching``): one core instead of two.
* ``CudaBackend``: a local GPU; warm-up builds and compiles every GPU model of the catalog (the
  inductor cache lives on disk, so a restart does not recompile) and one engine thread owns the GPU,
  because compiled kernels and CUDA graphs belong to the thread that built them.
* ``ZeroGpuBackend``: Hugging Face ZeroGPU; each stretch of play is a ``@spaces.GPU`` generator of
  bounded duration running in a forked worker that reads controls from shared memory, encodes JPEGs
  there and rebuilds the world from the kept frames when it lands on a fresh worker. Warm-up loads
  every model (and its prompt encoder) in the main process, where ZeroGPU packs the weights, and
  compiles each GPU model's DiT step ahead of time (AOTInductor) in one GPU call, keeping the
  package on disk for the next start. The CPU-sized embedded model runs on the CPU, outside
  ``@spaces.GPU``, so it never spends a visitor's GPU quota.

``spaces.GPU`` is the identity off ZeroGPU, so the same code runs everywhere. Engines are
``world_engine.protocol.WorldSource`` objects; every browser session plays its own ``fork()``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import spaces
import torch

from player.engine_thread import EngineThread
from player.reality import BESIDE_REALITY, REALITY, Reality, beside_reality, learned_from_simulator
from player.sessions import BOARD, MAX_SLOTS
from player.stream import EncodedFrame, Notice, ResidentWorlds, SegmentArgs, WorldRecipe, run_segment
from world_engine.controls import CtrlInput
from world_engine.engine import gen_frames
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
    split: bool = False  # played beside the simulator it learned from (``player.reality``)


def detect_kind() -> str:
    if spaces.config.Config.zero_gpu:
        return "zerogpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_catalog(extra_models: list[str], kind: str) -> list[ModelChoice]:
    """The allow-list: models named on the CLI, the embedded model, Waypoint-1-Small on a GPU, and
    the simulator itself ("reality"); each model trained on the simulator also beside it."""
    from world_engine.engine import EMBEDDED_MODEL

    choices = []
    for uri in extra_models:
        folder = Path(uri).expanduser()
        name = folder.name if folder.is_dir() else uri
        choices.append(ModelChoice(key=uri, label=f"{name} (--model)", uri=uri))
        if folder.is_dir() and learned_from_simulator(folder):
            choices.append(ModelChoice(key=uri + BESIDE_REALITY, label=f"{name} beside reality (split view)",
                                       uri=uri, split=True))
    if (EMBEDDED_MODEL / "config.yaml").is_file():
        choices.append(ModelChoice(key="embedded", label="Tiny world (embedded, runs on CPU)", uri=None))
        if learned_from_simulator(EMBEDDED_MODEL):
            choices.append(ModelChoice(key="embedded" + BESIDE_REALITY, uri=None, split=True,
                                       label="Tiny world beside reality (split view: dream | simulator, PSNR)"))
    if kind != "cpu" and WAYPOINT_SMALL not in extra_models:
        choices.append(ModelChoice(key=WAYPOINT_SMALL, label="Waypoint-1-Small (GPU)", uri=WAYPOINT_SMALL))
    choices.append(ModelChoice(key=REALITY, label="Reality: the simulator the tiny model learned", uri=REALITY))
    return choices


class EngineCache:
    """The shared engine (weights) of each model: built once, even when two sessions ask at once.

    ``device`` is where engines compute, or a function of the model's uri that says where.
    """

    def __init__(self, device: str | Callable[[str | None], str], compile: bool, capacity: int = 4,
                 attention: str | None = None) -> None:
        self.device, self.compile, self.capacity, self.attention = device, compile, capacity, attention
        self._engines: OrderedDict[str | None, WorldSource] = OrderedDict()
        self._lock = threading.Lock()

    def device_for(self, uri: str | None) -> str:
        return self.device(uri) if callable(self.device) else self.device

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

        device = self.device_for(uri)
        return WorldEngine(model=uri, device=device, compile=self.compile and device != "cpu",
                           attention=self.attention)


class WarmUp:
    """Progress of getting the engines ready, readable from any thread. ``fast_path`` says how the
    CPU compile after warm-up stands ("" when there is none)."""

    def __init__(self) -> None:
        self.fraction = 0.0
        self.text = "starting"
        self.error: str | None = None
        self.done = threading.Event()
        self.fast_path = ""

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

    def __init__(self, segment_seconds: float, cpu_compile: bool = False, batch_sessions: int = 1) -> None:
        self.segment_seconds = segment_seconds
        self.cpu_compile = cpu_compile
        self.batch_sessions = batch_sessions
        self.engines = EngineCache(self.device, compile=self.compiles)
        self.worlds = ResidentWorlds(MAX_SLOTS)
        self.warmup = WarmUp()

    def warm_up(self, choices: list[ModelChoice]) -> None:
        """Get the engines ready (``_prepare``); a failure shows in the status line and the app keeps
        serving the other models. Then, with ``cpu_compile``, compile the default CPU model while
        it already plays."""
        try:
            self._prepare(choices)
            self.warmup.update(1.0, "ready")
        except Exception as exc:
            self.warmup.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.warmup.done.set()
        if self.cpu_compile and not self.warmup.error:
            self._compile_cpu_model(choices[0])

    def _compile_cpu_model(self, choice: ModelChoice) -> None:
        """``compile_step`` of ``choice``'s engine if it computes on the CPU, kept only where it is
        faster than eager, with the compile cache kept on disk (a restart loads it in seconds); a
        failure leaves it eager and says why."""
        if self.engines.device_for(choice.uri) != "cpu":
            return
        engine = self.engines.get(choice.uri)
        if not hasattr(engine, "compile_step"):
            return
        cache = CompileCache()
        self.warmup.fast_path = "compiling (playing eager meanwhile)"
        try:
            cache.load()
            compiled = self.call(engine.compile_step, True)
            cache.save()
            self.warmup.fast_path = "compiled" if compiled else "eager (the compiled code was slower on this CPU)"
        except Exception as exc:   # no working compiler, an inductor bug: eager still plays
            traceback.print_exc()
            self.warmup.fast_path = f"off ({type(exc).__name__})"

    def _prepare(self, choices: list[ModelChoice]) -> None:
        """Build the default engine and run a few frames; with ``batch_sessions`` > 1, its sessions
        that ask for frames together share one forward per pass (``WorldEngine.batch_sessions``)."""
        self.warmup.update(0.05, f"loading {choices[0].label}")
        engine = self.call(self.engines.get, choices[0].uri)
        if self.batch_sessions > 1 and hasattr(engine, "batch_sessions"):
            engine.batch_sessions(self.batch_sessions)
        probe = engine.fork(seed=0)
        for i in range(3):
            self.warmup.update(0.3 + 0.2 * i, self.warm_text)
            self.call(probe.next_frame, CtrlInput())
        probe.close()

    def open_world(self, uri: str | None, recipe: WorldRecipe) -> InteractiveWorld:
        world = self.engines.get(uri).fork(seed=recipe.seed)
        return beside_reality(world, recipe.seed) if recipe.split else world

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


def persistent_cache_dir(name: str) -> Path:
    """A folder that outlives the process: ``$WORLD_PLAYER_CACHE`` (default ``~/.cache/world-player``;
    on a Space with persistent storage, ``/data/world-player``)."""
    default = Path("/data/world-player") if Path("/data").is_dir() and os.access("/data", os.W_OK) \
        else Path.home() / ".cache" / "world-player"
    root = Path(os.environ.get("WORLD_PLAYER_CACHE", default))
    return root / name


class CompileCache:
    """Inductor's caches on disk (``TORCHINDUCTOR_CACHE_DIR``, default ``persistent_cache_dir``),
    plus the artefacts of ``torch.compiler.save_cache_artifacts`` saved after a compile and loaded
    back at the next start, so a restart does not recompile."""

    def __init__(self) -> None:
        inductor_dir = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(persistent_cache_dir("inductor"))))
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
        os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
        self.path = inductor_dir / "mega-cache.bin"

    def load(self) -> None:
        if self.path.is_file():
            try:
                torch.compiler.load_cache_artifacts(self.path.read_bytes())
            except Exception as exc:  # a cache from another torch version: compile afresh
                print(f"compile cache not loaded ({exc})", file=sys.stderr)

    def save(self) -> None:
        try:
            saved = torch.compiler.save_cache_artifacts()
        except Exception as exc:
            print(f"compile cache not saved ({exc})", file=sys.stderr)
            return
        if saved:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(saved[0])
            tmp.replace(self.path)


def cpu_compiler_available() -> bool:
    """Whether inductor can build C++ here (``$CXX``, else ``g++``/``c++`` on the PATH)."""
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++") if c)


def _gpu_choices(choices: list[ModelChoice]) -> list[ModelChoice]:
    """The models to warm on a GPU: not the simulator, and a split entry once, as its own model."""
    return [c for c in choices if c.uri != REALITY and not c.split]


class CudaBackend(Backend):
    """A local GPU, owned by one engine thread (``player.engine_thread``); warm-up compiles every GPU
    model of the catalog.

    Sessions' frame loops run on their own (Gradio worker) threads and send only the engine calls
    to the engine thread, so one session waiting for its page never holds the GPU from the others.
    With ``batch_sessions`` > 1 the sessions of one model that ask together share one forward,
    made on the engine thread; warm-up compiles each batch size up to it.

    The inductor/Triton caches live on disk (``TORCHINDUCTOR_CACHE_DIR``), and after warm-up the
    compile artefacts are saved with ``torch.compiler.save_cache_artifacts`` and loaded back at the
    next start, so a restart does not recompile.
    """

    kind = "cuda"
    device = "cuda"
    compiles = True
    warm_text = "compiling"
    warm_frames = 3

    def __init__(self, segment_seconds: float, cpu_compile: bool = False, batch_sessions: int = 1) -> None:
        self.compile_cache = CompileCache()
        self.mega_cache = self.compile_cache.path
        super().__init__(segment_seconds, cpu_compile, batch_sessions)
        self.engine_thread = EngineThread()

    def call(self, fn: Callable, *args):
        return self.engine_thread.call(fn, *args)

    def open_world(self, uri: str | None, recipe: WorldRecipe) -> InteractiveWorld:
        world = self.engine_thread.world(self.call(lambda: self.engines.get(uri).fork(recipe.seed)))
        return beside_reality(world, recipe.seed) if recipe.split else world

    def segments(self, args: SegmentArgs, uri: str | None) -> Iterator[EncodedFrame | Notice]:
        """The frame loop on the caller's thread; its world's calls go to the engine thread."""
        yield from run_segment(args, BOARD, self.worlds, functools.partial(self.open_world, uri))

    def _prepare(self, choices: list[ModelChoice]) -> None:
        """Build every GPU model, load its prompt encoder and run a few frames (compiling it), with
        the model and the stage in the status line. A model that fails is reported and skipped."""
        self._load_compile_cache()
        models = _gpu_choices(choices)
        failed = []
        for i, choice in enumerate(models):
            part = f"{choice.label} ({i + 1}/{len(models)})"
            base, span = 0.02 + 0.96 * i / len(models), 0.96 / len(models)
            try:
                self.warmup.update(base, f"loading {part}")
                engine = self.call(self.engines.get, choice.uri)
                if hasattr(engine, "load_prompt_encoder"):
                    self.warmup.update(base + 0.2 * span, f"loading the prompt encoder of {part}")
                    self.call(engine.load_prompt_encoder)
                batching = self.batch_sessions > 1 and hasattr(engine, "batch_sessions")
                probes = [self.call(engine.fork, 0) for _ in range(self.batch_sessions if batching else 1)]
                for f in range(self.warm_frames):
                    self.warmup.update(base + (0.3 + 0.7 * f / self.warm_frames) * span, f"{self.warm_text} {part}")
                    self.call(probes[0].next_frame, CtrlInput())
                    for size in range(2, len(probes) + 1):    # every batch size compiles now, not mid-play
                        self.call(gen_frames, probes[:size], [CtrlInput()] * size)
                for probe in probes:
                    self.call(probe.close)
                if batching:
                    engine.batch_sessions(self.batch_sessions, run_on=self.call)
            except Exception as exc:  # the other models stay playable
                traceback.print_exc()
                failed.append(f"{choice.label}: {type(exc).__name__}: {exc}")
        self._save_compile_cache()
        if failed:
            raise RuntimeError("; ".join(failed))

    def _load_compile_cache(self) -> None:
        self.compile_cache.load()

    def _save_compile_cache(self) -> None:
        self.compile_cache.save()


AOTI_COMPILE_SECONDS = 1500   # the longest GPU call ZeroGPU grants at start-up (HF's AoTI guide)
AOTI_PACKAGE = Path("root") / "package.pt2"


class ZeroGpuBackend(Backend):
    """Hugging Face ZeroGPU: segments run as ``@spaces.GPU`` generators in a forked GPU worker.

    The decorated functions are bound methods wrapped before the first GPU call, so a worker forked
    at a call inherits this backend (its engines and resident worlds) and only the arguments travel.

    Warm-up runs in the main process, before launch, where ``torch.cuda`` is ZeroGPU's emulation:
    engines are built "on cuda" (ZeroGPU packs their weights at launch), prompt encoders are loaded,
    and nothing reaches the CUDA runtime (the engine makes its noise generator, caches and pinned
    buffers at the first frame, inside a worker). Each GPU model's flat DiT step is then compiled
    ahead of time: one ``@spaces.GPU`` call captures a real step call (``spaces.aoti_capture``),
    exports it and compiles it with AOTInductor into a package on disk
    (``spaces.aoti_compile_and_save``); the main process patches the step with that package
    (``spaces.aoti_load_from_package_dir``), whose weights are the module's own, so nothing is
    copied or drained. A package from an earlier start with the same key is reused as it is. If any
    of it fails, the model plays eager.
    """

    kind = "zerogpu"
    device = "cuda"

    def __init__(self, segment_seconds: float, cpu_compile: bool = False) -> None:
        # No CPU compile here: this warm-up runs before launch, and it would hold the launch for minutes.
        super().__init__(segment_seconds)
        self.engines = EngineCache(self.device_for, compile=False,
                                   attention=os.environ.get("WORLD_PLAYER_AOTI_ATTENTION", "sdpa"))
        self.aoti_dir = persistent_cache_dir("aoti")
        self.aoti_status: dict[str | None, str] = {}
        self._gpu_segment = spaces.GPU(duration=self._segment_duration)(self._segment_in_worker)
        self._gpu_compile = spaces.GPU(duration=AOTI_COMPILE_SECONDS)(self._compile_in_worker)

    def device_for(self, uri: str | None) -> str:
        """The embedded model (uri None) is CPU-sized: it plays on the CPU, never in a GPU call."""
        return "cpu" if uri is None else self.device

    def _prepare(self, choices: list[ModelChoice]) -> None:
        """Load every engine and prompt encoder before the first GPU fork, then compile the GPU ones
        ahead of time. A CPU engine runs a frame here (no GPU involved)."""
        failed = []
        for i, choice in enumerate(choices):
            base = 0.02 + 0.96 * i / len(choices)
            try:
                self.warmup.update(base, f"loading {choice.label}")
                engine = self.engines.get(choice.uri)
                if choice.uri == REALITY or choice.split:     # a split entry plays its model's engine
                    continue
                engine.load_prompt_encoder()
                if self.device_for(choice.uri) != "cpu":
                    self._compile_ahead(choice, engine, base)
                else:
                    probe = engine.fork(seed=0)
                    probe.next_frame(CtrlInput())
                    probe.close()
            except Exception as exc:
                traceback.print_exc()
                failed.append(f"{choice.label}: {type(exc).__name__}: {exc}")
        if failed:
            raise RuntimeError("; ".join(failed))

    # Ahead-of-time compilation ------------------------------------------------------------------
    def aoti_package_dir(self, engine) -> Path:
        """Where the AOTI package of ``engine``'s step lives: keyed by everything that changes the
        compiled code (architecture, dtype, attention, torch, the step's source, the GPU), not by the
        weights, which the package does not hold."""
        cfg = spaces.config.Config
        key = {"step": engine.step_signature(), "torch": torch.__version__,
               "gpu": [cfg.zerogpu_cuda_device_name, cfg.zerogpu_cuda_capability_major,
                       cfg.zerogpu_cuda_capability_minor]}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.aoti_dir / digest

    def _compile_ahead(self, choice: ModelChoice, engine, base: float) -> None:
        package_dir = self.aoti_package_dir(engine)
        try:
            if not (package_dir / AOTI_PACKAGE).is_file():
                self.warmup.update(base + 0.01, f"compiling {choice.label} ahead of time (one GPU call, minutes)")
                self._gpu_compile(choice.uri, str(package_dir))
                self.aoti_status[choice.uri] = "compiled"
            else:
                self.aoti_status[choice.uri] = "reused"
            spaces.aoti_load_from_package_dir(engine.step_module, package_dir)
        except Exception as exc:   # plays eager: slower, but it plays
            traceback.print_exc()
            self.aoti_status[choice.uri] = f"eager ({type(exc).__name__}: {exc})"

    def _compile_in_worker(self, uri: str | None, package_dir: str) -> str:
        """In a GPU worker: capture a real step call of a probe world, export it, compile it with
        AOTInductor and save the package (written beside, then moved in place)."""
        engine = self.engines.get(uri)
        probe = engine.fork(seed=0)
        try:
            with spaces.aoti_capture(engine.step_module) as call:
                probe.gen_frame(CtrlInput(), return_img=False)
        finally:
            probe.close()
        exported = engine.export_step(call.args, call.kwargs)
        final = Path(package_dir)
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        spaces.aoti_compile_and_save(tmp, exported)
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        return str(final)

    # Play ---------------------------------------------------------------------------------------
    def segments(self, args: SegmentArgs, uri: str | None) -> Iterator[EncodedFrame | Notice]:
        """GPU engines run in the worker; a world computed on the host (the simulator, the embedded
        model) runs here, outside ``@spaces.GPU``."""
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


def create_backend(kind: str, segment_seconds: float, cpu_compile: bool = False, batch_sessions: int = 1) -> Backend:
    """The backend of ``kind``; ``batch_sessions`` batches up to that many visitors' frames into one
    forward (the CPU backend's default model, every model of a local GPU; on ZeroGPU each session
    plays in its own worker process, so there is nothing to batch)."""
    if kind in ("cpu", "cuda"):
        return BACKENDS[kind](segment_seconds, cpu_compile, batch_sessions)
    return BACKENDS[kind](segment_seconds, cpu_compile)
