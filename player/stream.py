"""The frame loop: sample the newest controls, generate one frame, encode it, pace, repeat.

``run_segment`` is one bounded stretch of play. It takes and yields only picklable values so the
same function runs in-process (CPU, local CUDA) or inside a ZeroGPU worker, where it reads the
controls from the shared-memory board and rebuilds the session's world from the kept frames
whenever the worker it lands on has not seen that world yet.
"""

from __future__ import annotations

import io
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from player.controls import ControlMapper
from player.sessions import ControlBoard
from world_engine.controls import CtrlInput

CtrlTuple = tuple[tuple[int, ...], float, float]   # (buttons, dx, dy): picklable, JSON-able


@dataclass(frozen=True)
class WorldSpec:
    """What defines a world besides its controls and prompt: rebuilt from this plus kept frames."""

    world_id: int
    model: str
    seed: int
    start_image: bytes | None = None   # PNG appended before the first frame (first history entry)


@dataclass(frozen=True)
class SegmentArgs:
    """Everything one segment needs (picklable, sent into the ZeroGPU worker)."""

    key: str
    slot: int
    owner: int
    run: int
    world: WorldSpec
    frames_done: int                          # frames generated in this world so far
    history: tuple[tuple[bytes, CtrlTuple], ...]   # start image + newest frames, to re-prime a worker
    first_n: int                              # page-facing number of the first frame
    script: tuple[Any, ...] = ()             # key bitmasks (ints) or exact CtrlTuples, one per frame
    script_events: tuple[tuple[int, str, Any], ...] = ()   # (script frame, "prompt"|"steps", value)
    fps: float = 20.0
    max_seconds: float = math.inf
    idle_timeout_s: float = math.inf
    jpeg_quality: int = 90


@dataclass(frozen=True)
class Frame:
    """One generated frame, JPEG-encoded."""

    n: int
    seq: int              # newest control seq this frame responded to
    jpeg: bytes
    width: int
    height: int
    ctrl: CtrlTuple
    keys: int
    gen_ms: float
    prompt: str
    steps: int
    scripted: bool


@dataclass(frozen=True)
class Notice:
    """Why a segment stopped early, or a warning to show (e.g. a rejected prompt)."""

    kind: str      # "idle" | "gone" | "prompt_error"
    message: str


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """JPEG without chroma subsampling: the frames are small, colour edges matter."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def to_ctrl(t: CtrlTuple) -> CtrlInput:
    return CtrlInput(button=set(t[0]), mouse=(t[1], t[2]))


def from_ctrl(c: CtrlInput) -> CtrlTuple:
    return (tuple(sorted(c.button)), float(c.mouse[0]), float(c.mouse[1]))


@dataclass
class LiveWorld:
    """A session's engine plus what has been applied to it, in the process running the loop."""

    engine: Any
    world_id: int
    frames_done: int
    prompt_version: int       # the board's prompt version last applied
    prompt: str
    steps: int                # denoising steps in use (0: the model's own schedule)
    board_steps: int          # the board's steps value last applied


class WorldCache:
    """Per-session live worlds in the process that runs the frame loop (bounded, least recent out).

    Locked: frame loops of several sessions and the main thread's ``drop`` use it at once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, LiveWorld] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, world_id: int, frames_done: int) -> LiveWorld | None:
        """The live world if it is exactly where the main process believes it is."""
        with self._lock:
            live = self._entries.get(key)
            if live is None or (live.world_id, live.frames_done) != (world_id, frames_done):
                return None
            self._entries.move_to_end(key)
            return live

    def put(self, key: str, live: LiveWorld) -> None:
        with self._lock:
            self._entries[key] = live
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


def in_flight_window(fps: float) -> int:
    """Frames allowed on the wire before the page acknowledges them (~0.4 s worth, at least 3).

    Enough to cover a 100-200 ms round trip plus the ack period at full rate, small enough that a
    slow link throttles the stream instead of building seconds of lag.
    """
    return max(3, math.ceil(fps * 0.4))


def _set_steps(live: LiveWorld, steps: int) -> None:
    live.engine.set_steps(steps)
    live.steps = steps


def _set_prompt(live: LiveWorld, text: str) -> Notice | None:
    if live.engine.config.prompt_conditioning is None:
        return None
    try:
        live.engine.set_prompt(text)
    except ValueError as exc:
        return Notice("prompt_error", f"Prompt not applied: {exc}")
    live.prompt = text
    return None


def _prime(args: SegmentArgs, board: ControlBoard, new_engine: Callable[[WorldSpec], Any]
           ) -> tuple[LiveWorld, list[Notice]]:
    """Build the session's world from scratch: seed, steps, prompt, then the kept frames."""
    engine = new_engine(args.world)
    snap = board.snapshot(args.slot)
    live = LiveWorld(engine, args.world.world_id, args.frames_done, prompt_version=-1, prompt="",
                     steps=0, board_steps=snap.steps)
    if snap.steps:
        _set_steps(live, snap.steps)
    live.prompt_version, text = board.prompt(args.slot)
    notices = [n for n in [_set_prompt(live, text)] if n and text]
    for jpeg, ctrl in args.history:   # begins with the start image while it is among the newest
        engine.append_frame(decode_image(jpeg), to_ctrl(ctrl))
    return live, notices


def run_segment(
    args: SegmentArgs,
    board: ControlBoard,
    worlds: WorldCache,
    new_engine: Callable[[WorldSpec], Any],
) -> Iterator[Frame | Notice]:
    """Generate frames until paused, superseded, idle, or ``args.max_seconds`` have passed.

    ``new_engine(world)`` builds a fresh seeded engine for the world; a world this process has
    not seen is re-primed from ``args.history``.
    """
    snap = board.snapshot(args.slot)
    if snap.owner != args.owner or snap.run != args.run:
        return
    live = worlds.get(args.key, args.world.world_id, args.frames_done)
    if live is None:
        live, notices = _prime(args, board, new_engine)
        worlds.put(args.key, live)
        yield from notices
    engine = live.engine
    mapper = ControlMapper(engine.config.n_buttons)
    n = args.first_n
    window = in_flight_window(args.fps)
    period = 1.0 / args.fps
    start = next_t = time.monotonic()
    for i in itertools.count():
        snap = board.snapshot(args.slot)
        # Backpressure: wait while too many frames are unacknowledged or the tab is hidden.
        while (snap.state.ack >= 0 and n - 1 - snap.state.ack >= window) or not snap.state.visible:
            if snap.owner != args.owner or snap.run != args.run:
                return
            if time.time() - snap.t_recv > 30:
                yield Notice("gone", "Paused: the page stopped answering.")
                return
            time.sleep(0.005)
            next_t = time.monotonic()
            snap = board.snapshot(args.slot)
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            snap = board.snapshot(args.slot)   # the freshest controls, right before the frame
        if snap.owner != args.owner or snap.run != args.run:
            return
        scripted = i < len(args.script)
        if not scripted and time.time() - snap.t_input > args.idle_timeout_s:
            yield Notice("idle", f"Paused after {args.idle_timeout_s:.0f} s without input.")
            return
        if snap.steps != live.board_steps:
            live.board_steps = snap.steps
            _set_steps(live, snap.steps)
        if snap.prompt_version != live.prompt_version:
            live.prompt_version, text = board.prompt(args.slot)
            if notice := _set_prompt(live, text):
                yield notice
        for _, kind, value in (e for e in args.script_events if e[0] == i):
            if kind == "prompt":
                if notice := _set_prompt(live, value):
                    yield notice
            elif kind == "steps":
                _set_steps(live, value)
        if scripted:
            item = args.script[i]
            ctrl = mapper.frame(snap.state, script_keys=item) if isinstance(item, int) else to_ctrl(item)
            mapper.follow(snap.state)
            keys = item if isinstance(item, int) else 0
        else:
            ctrl = mapper.frame(snap.state)
            keys = snap.state.keys
        t0 = time.perf_counter()
        img = engine.gen_frame(ctrl)
        img = img.cpu().numpy() if hasattr(img, "cpu") else np.asarray(img)
        gen_ms = (time.perf_counter() - t0) * 1000
        live.frames_done += 1
        yield Frame(n=n, seq=snap.state.seq, jpeg=encode_jpeg(img, args.jpeg_quality), width=img.shape[1],
                    height=img.shape[0], ctrl=from_ctrl(ctrl), keys=keys, gen_ms=gen_ms, prompt=live.prompt,
                    steps=live.steps, scripted=scripted)
        n += 1
        now = time.monotonic()
        next_t = max(next_t + period, now)   # never burst to catch up
        if now - start >= args.max_seconds:
            return
