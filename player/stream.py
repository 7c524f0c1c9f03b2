"""The frame loop: sample the newest controls, generate one frame, encode it, pace, repeat.

``run_segment`` is one bounded stretch of play. It takes and yields only picklable values so the
same function runs in-process (CPU, local CUDA) or inside a ZeroGPU worker, where it reads the
controls from the shared-memory board. It drives any ``world_engine.protocol.InteractiveWorld``
and maps the controls by the world's own convention.

Each segment ends by handing back where its world is (``Resume``: a portable snapshot, the kept
latents a restore needs), so a worker that has not seen the world restores it from there. Rewind
and re-sync requests arrive on the board and are applied right before a frame; a rewind is
answered with ``Rewound`` so the main process trims its recording to the world's new past.
"""

from __future__ import annotations

import io
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from player.controls import ControlMapper
from player.sessions import ControlBoard, SlotSnapshot
from world_engine.controls import CtrlInput
from world_engine.protocol import InteractiveWorld, Snapshot
from world_engine.transfer import PendingFrame

CtrlTuple = tuple[tuple[int, ...], float, float]   # (buttons, dx, dy): picklable, JSON-able
PAGE_TIMEOUT_S = 30.0     # a page silent this long (no control message) has gone
ACK_TIMEOUT_S = 5.0       # a stream whose frames nobody acknowledges this long has no reader
HIDDEN_TIMEOUT_S = 10.0   # a play in a hidden tab ends after this long
TIME_UP = "Time's up for this turn \u2014 press Start to play again."
START_IMAGE_UNUSED = "This world starts from its own map, not from a picture: the start image is not used."
KEEP_SECONDS = 30.0        # how far back a world can be rewound (its kept history)
RESYNC_NEEDS_SPLIT = "Re-sync compares the dream with reality: pick a model shown beside reality first."


@dataclass(frozen=True)
class WorldRecipe:
    """What defines a world besides its controls and prompt: rebuilt from this plus a snapshot."""

    world_id: int
    model: str
    seed: int
    start_image: bytes | None = None   # PNG appended before the first frame (first history entry)
    split: bool = False                # the model beside the simulator (``player.reality``)


@dataclass(frozen=True)
class Resume:
    """Where a world was when its segment ended: a portable snapshot after ``frames_done`` frames."""

    world_id: int
    frames_done: int
    snapshot: Snapshot


@dataclass(frozen=True)
class Rewound:
    """The world went back: it has made ``frames_done`` frames now (answering rewind ``version``)."""

    frames_done: int
    version: int


@dataclass(frozen=True)
class SegmentArgs:
    """Everything one segment needs (picklable, sent into the ZeroGPU worker)."""

    key: str
    slot: int
    owner: int
    run: int
    recipe: WorldRecipe
    frames_done: int                          # frames generated in this world so far
    first_n: int                              # page-facing number of the first frame
    script: Sequence[Any] = ()               # key bitmasks (ints) or exact CtrlTuples, one per frame
    script_events: tuple[tuple[int, str, Any], ...] = ()   # (script frame, "prompt"|"steps"|"resync", value)
    fps: float = 20.0
    max_seconds: float = math.inf
    idle_timeout_s: float = math.inf
    ack_timeout_s: float = ACK_TIMEOUT_S      # no reader: frames unacknowledged this long end the play
    hidden_timeout_s: float = HIDDEN_TIMEOUT_S
    jpeg_quality: int | None = None    # None: by frame size (encode_jpeg)
    resume: Resume | None = None              # where the world was at the end of its last segment
    keep_frames: int = round(KEEP_SECONDS * 20) + 1   # the world's kept history (frames)
    rewind_seen: int = 0                      # the newest rewind request already answered


@dataclass(frozen=True)
class EncodedFrame:
    """One generated frame, JPEG-encoded, with what it was made from."""

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
    back: int = 0                 # frames the world can be rewound by now
    psnr: float | None = None     # a split world: the dream against reality, dB
    resynced: bool = False        # the true frames were written into the model's history first


@dataclass(frozen=True)
class Notice:
    """Something to tell the player: a warning while play goes on, or why play stopped."""

    kind: str               # "warning" | "idle" | "gone" | "hidden" | "time" | "quota"
    message: str
    state: str = "paused"   # the status line's state once it has stopped play

    @property
    def ends_play(self) -> bool:
        return self.kind != "warning"


LARGE_FRAME_PX = 256   # frames this wide or tall and up stream at q80 with 4:2:0 chroma


def encode_jpeg(img: np.ndarray, quality: int | None = None) -> bytes:
    """JPEG of a frame. Small frames (the embedded model's 64x64) keep full chroma at q90: a colour
    edge there spans a pixel or two. From ``LARGE_FRAME_PX`` on (Waypoint's 640x360) q80 with 4:2:0
    chroma: 2.5x fewer bytes and half the encode time (6.7 vs 13 ms here), which a 60 fps stream needs.
    ``quality`` overrides the level, not the chroma choice."""
    large = max(img.shape[:2]) >= LARGE_FRAME_PX
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality or (80 if large else 90),
                              subsampling=2 if large else 0)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def to_ctrl(t: CtrlTuple) -> CtrlInput:
    return CtrlInput(button=set(t[0]), mouse=(t[1], t[2]))


def from_ctrl(c: CtrlInput) -> CtrlTuple:
    return (tuple(sorted(c.button)), float(c.mouse[0]), float(c.mouse[1]))


@dataclass(eq=False)
class ResidentWorld:
    """A session's world open in the process that runs its frame loop, and what was applied to it."""

    world: InteractiveWorld
    world_id: int
    frames_done: int
    prompt_version: int       # the board's prompt version last applied
    prompt: str
    steps: int                # denoising steps in use (0: the model's own schedule)
    board_steps: int          # the board's steps value last applied
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)   # held for each frame
    closed: bool = False
    rewind_version: int = 0   # the board's rewind requests answered so far
    resync_version: int = 0   # the board's re-sync requests answered so far
    resynced: bool = False    # re-synced before the frame being made (the recording logs it)

    def close(self) -> None:
        """Close the world, after the frame it may be making right now."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.world.close()


class ResidentWorlds:
    """The sessions' resident worlds (bounded, least recent out); a world that leaves is closed.

    Locked: frame loops of several sessions and the main thread's ``drop`` use it at once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, ResidentWorld] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, world_id: int, frames_done: int) -> ResidentWorld | None:
        """The resident world if it is exactly where the main process believes it is."""
        with self._lock:
            resident = self._entries.get(key)
            if resident is None or (resident.world_id, resident.frames_done) != (world_id, frames_done):
                return None
            self._entries.move_to_end(key)
            return resident

    def put(self, key: str, resident: ResidentWorld) -> None:
        with self._lock:
            gone = [self._entries.pop(key)] if key in self._entries else []
            self._entries[key] = resident
            while len(self._entries) > self.capacity:
                gone.append(self._entries.popitem(last=False)[1])
        for old in gone:     # outside the lock: closing waits for a frame in progress
            if old is not resident:
                old.close()

    def drop(self, key: str) -> None:
        with self._lock:
            resident = self._entries.pop(key, None)
        if resident is not None:
            resident.close()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries


def in_flight_window(fps: float) -> int:
    """Frames allowed on the wire before the page acknowledges them (~0.4 s worth, at least 3).

    Enough to cover a 100-200 ms round trip plus the ack period at full rate, small enough that a
    slow link throttles the stream instead of building seconds of lag.
    """
    return max(3, math.ceil(fps * 0.4))


class _Pacer:
    """Frame times at ``fps`` for at most ``max_seconds``; never bursts to catch up."""

    def __init__(self, fps: float, max_seconds: float) -> None:
        self.period, self.max_seconds = 1.0 / fps, max_seconds
        self.start = self.next_t = time.monotonic()

    def hold(self) -> None:
        """The loop waited on the page: the next frame is due now, not at its old time."""
        self.next_t = time.monotonic()

    def due(self) -> bool:
        """Whether the next frame is due now."""
        return time.monotonic() >= self.next_t

    def sleep_until_due(self) -> bool:
        """Sleep until the next frame is due; whether it slept."""
        delay = self.next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return delay > 0

    def frame_done(self) -> bool:
        """Schedule the next frame; True once the segment's time is up."""
        now = time.monotonic()
        self.next_t = max(self.next_t + self.period, now)
        return now - self.start >= self.max_seconds


def _is_current(snap: SlotSnapshot, args: SegmentArgs) -> bool:
    """The slot still belongs to this session and this play (not paused, superseded or freed)."""
    return snap.owner == args.owner and snap.run == args.run


def _set_steps(resident: ResidentWorld, steps: int) -> None:
    resident.world.set_steps(steps)
    resident.steps = steps


def _set_prompt(resident: ResidentWorld, text: str) -> Notice | None:
    if not resident.world.convention.prompted:
        return None
    try:
        resident.world.set_prompt(text)
    except ValueError as exc:
        return Notice("warning", f"Prompt not applied: {exc}")
    resident.prompt = text
    return None


def _prime(args: SegmentArgs, board: ControlBoard, open_world: Callable[[WorldRecipe], InteractiveWorld]
           ) -> tuple[ResidentWorld, list[Notice | Rewound]]:
    """Build the session's world: seed, kept history, steps, then the snapshot the last segment
    handed back (or, for a new world, the start image), then the prompt. A world that cannot be put
    back where the main process believes it is (no snapshot of that point) says where it is."""
    world = open_world(args.recipe)
    world.keep_history(args.keep_frames)
    snap = board.snapshot(args.slot)
    resident = ResidentWorld(world, args.recipe.world_id, 0, prompt_version=-1, prompt="", steps=0,
                             board_steps=snap.steps, rewind_version=args.rewind_seen,
                             resync_version=snap.resync_version)
    if snap.steps:
        _set_steps(resident, snap.steps)
    resume = args.resume if args.resume is not None and args.resume.world_id == args.recipe.world_id else None
    notices: list[Notice | Rewound] = []
    if resume is not None:
        world.restore(resume.snapshot)
        resident.frames_done = resume.frames_done
    elif args.recipe.start_image is not None:
        if world.convention.takes_images:
            world.append_frame(decode_image(args.recipe.start_image), CtrlInput())
        elif args.frames_done == 0:
            notices.append(Notice("warning", START_IMAGE_UNUSED))
    resident.prompt_version, text = board.prompt(args.slot)
    if resume is not None and resume.snapshot.prompt == text:
        resident.prompt = text            # restored with it: no need to encode it again
    elif text:
        notices += [n for n in [_set_prompt(resident, text)] if n]
    if resident.frames_done != args.frames_done:
        notices.append(Rewound(resident.frames_done, args.rewind_seen))
    return resident, notices


def _resident(args: SegmentArgs, board: ControlBoard, worlds: ResidentWorlds,
              open_world: Callable[[WorldRecipe], InteractiveWorld]) -> tuple[ResidentWorld, list[Notice | Rewound]]:
    """The session's world in this process: the resident one, or one restored from its snapshot."""
    resident = worlds.get(args.key, args.recipe.world_id, args.frames_done)
    if resident is not None:
        return resident, []
    resident, notices = _prime(args, board, open_world)
    worlds.put(args.key, resident)
    return resident, notices


def _wait_for_page(args: SegmentArgs, board: ControlBoard, pacer: _Pacer, n: int
                   ) -> SlotSnapshot | Notice | None:
    """Backpressure: wait while too many frames are unacknowledged or the tab is hidden.

    Frame ``n`` may go out once the page has acknowledged all but a window of the frames sent
    before it (frames of earlier plays count as acknowledged). Waiting is bounded: no ack for
    ``ack_timeout_s`` (a stream nobody reads, or a frozen ack), a tab hidden for
    ``hidden_timeout_s``, a page silent for ``PAGE_TIMEOUT_S`` or the play's deadline end it.
    Returns the newest snapshot, a notice that ends play, or None when this play is no longer current.
    """
    window = in_flight_window(args.fps)
    snap = board.snapshot(args.slot)
    behind_since = hidden_since = None
    while True:
        if not _is_current(snap, args):
            return None
        now = time.time()
        if now >= snap.deadline:
            return Notice("time", TIME_UP)
        behind = n - 1 - max(snap.state.ack, args.first_n - 1) >= window
        hidden = not snap.state.visible
        if not behind and not hidden:
            return snap
        if now - snap.t_recv > PAGE_TIMEOUT_S:
            return Notice("gone", "Paused: the page stopped answering.")
        behind_since = (behind_since or now) if behind else None
        hidden_since = (hidden_since or now) if hidden else None
        if behind_since is not None and now - behind_since > args.ack_timeout_s:
            return Notice("gone", "Paused: the page stopped answering.")
        if hidden_since is not None and now - hidden_since > args.hidden_timeout_s:
            return Notice("hidden", "Paused while the tab was hidden \u2014 press Start to continue.")
        time.sleep(0.005)
        pacer.hold()
        snap = board.snapshot(args.slot)


def _apply_settings(args: SegmentArgs, board: ControlBoard, resident: ResidentWorld, snap: SlotSnapshot,
                    i: int) -> list[Notice]:
    """Steps and prompt changed on the board, then the replayed log's events for script frame ``i``."""
    notices = []
    if snap.steps != resident.board_steps:
        resident.board_steps = snap.steps
        _set_steps(resident, snap.steps)
    if snap.prompt_version != resident.prompt_version:
        resident.prompt_version, text = board.prompt(args.slot)
        notices.append(_set_prompt(resident, text))
    for _, kind, value in (e for e in args.script_events if e[0] == i):
        if kind == "prompt":
            notices.append(_set_prompt(resident, value))
        elif kind == "steps":
            _set_steps(resident, value)
        elif kind == "resync":
            notices.append(_resync(resident))
    return [n for n in notices if n is not None]


def _rewind(resident: ResidentWorld, snap: SlotSnapshot) -> Rewound:
    """Answer the board's newest rewind request: back to ``snap.rewind_to`` frames, or as far as
    the kept history reaches; the board's prompt is applied again before the next frame (an empty
    one means the model's default, which the restore already brought back)."""
    resident.rewind_version = snap.rewind_version
    back = min(max(resident.frames_done - snap.rewind_to, 0), resident.world.rewind_limit)
    if back:
        point = resident.world.snapshot(back)
        resident.world.restore(point)
        resident.frames_done -= back
        if resident.world.convention.prompted and resident.prompt and point.prompt != resident.prompt:
            resident.prompt_version = -1      # re-applied by _apply_settings before the frame
    return Rewound(resident.frames_done, snap.rewind_version)


def _resync(resident: ResidentWorld) -> Notice | None:
    """Write the true frames into a split world's model; other worlds have no truth to write."""
    resync = getattr(resident.world, "resync", None)
    if resync is None:
        return Notice("warning", RESYNC_NEEDS_SPLIT)
    resync()
    resident.resynced = True
    return None


def _controls(args: SegmentArgs, mapper: ControlMapper, snap: SlotSnapshot, i: int) -> tuple[CtrlInput, int]:
    """Frame ``i``'s controls and held-key mask: the script's while it lasts, then the live input."""
    if i < len(args.script):
        item = args.script[i]
        if isinstance(item, int):
            return mapper.frame(snap.state, script_keys=item), item
        mapper.follow(snap.state)
        return mapper.checked(to_ctrl(item)), 0     # a replayed frame passes the same gate as live input
    return mapper.frame(snap.state), snap.state.keys


@dataclass(frozen=True)
class _MadeFrame:
    """A frame made but not yet on the host and encoded (``_encode`` finishes it)."""

    pending: PendingFrame
    started: float                # perf_counter when its generation began
    fields: dict[str, Any]        # the EncodedFrame's other fields


def _make_frame(args: SegmentArgs, board: ControlBoard, resident: ResidentWorld, mapper: ControlMapper,
                snap: SlotSnapshot, i: int, n: int) -> tuple[_MadeFrame | None, list[Notice | Rewound]]:
    """Answer rewind and re-sync requests, apply the settings and make frame ``i`` (page number
    ``n``); None once closed. A world on a GPU hands back the frame on its way to the host."""
    with resident.lock:
        if resident.closed:
            return None, []
        notices: list[Notice | Rewound] = []
        if snap.rewind_version != resident.rewind_version:
            notices.append(_rewind(resident, snap))
        if snap.resync_version != resident.resync_version:
            resident.resync_version = snap.resync_version
            notices += [n for n in [_resync(resident)] if n]
        notices += _apply_settings(args, board, resident, snap, i)
        resynced, resident.resynced = resident.resynced, False
        ctrl, keys = _controls(args, mapper, snap, i)
        started = time.perf_counter()
        world = resident.world
        make_async = getattr(world, "next_frame_async", None)
        pending = make_async(ctrl) if make_async is not None else PendingFrame(world.next_frame(ctrl))
        resident.frames_done += 1
        back, psnr = min(world.rewind_limit, resident.frames_done), getattr(world, "psnr", None)
    return _MadeFrame(pending, started, dict(
        n=n, seq=snap.state.seq, ctrl=from_ctrl(ctrl), keys=keys, prompt=resident.prompt, steps=resident.steps,
        scripted=i < len(args.script), back=back, psnr=psnr, resynced=resynced)), notices


def _encode(made: _MadeFrame, quality: int | None) -> EncodedFrame:
    """Wait for the frame's pixels on the host and JPEG-encode them."""
    img = made.pending.result()
    gen_ms = (time.perf_counter() - made.started) * 1000
    return EncodedFrame(jpeg=encode_jpeg(img, quality), width=img.shape[1], height=img.shape[0], gen_ms=gen_ms,
                        **made.fields)


_FLUSH = object()   # from the frame loop to ``_in_order``: send what is encoded before waiting


def _in_order(items: Iterator[Any], quality: int | None) -> Iterator[EncodedFrame | Notice | Rewound]:
    """Encode the loop's frames and keep everything in order. A frame still on the device is
    encoded on a helper thread while the loop makes the next one (its download and JPEG encode
    overlap the next frame's kernels) and goes out right after that frame is queued, or as soon as
    the loop has time to spare; a frame already on the host is encoded and sent at once."""
    held: Future | None = None
    pool: ThreadPoolExecutor | None = None
    try:
        for item in items:
            if isinstance(item, _MadeFrame) and item.pending.asynchronous:
                pool = pool or ThreadPoolExecutor(1, thread_name_prefix="frame-encode")
                queued = pool.submit(_encode, item, quality)
                if held is not None:
                    yield held.result()
                held = queued
                continue
            if held is not None:
                yield held.result()
                held = None
            if isinstance(item, _MadeFrame):
                yield _encode(item, quality)
            elif item is not _FLUSH:
                yield item
        if held is not None:
            yield held.result()
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def run_segment(
    args: SegmentArgs,
    board: ControlBoard,
    worlds: ResidentWorlds,
    open_world: Callable[[WorldRecipe], InteractiveWorld],
) -> Iterator[EncodedFrame | Notice | Rewound | Resume]:
    """Generate frames until paused, superseded, idle, or ``args.max_seconds`` have passed, then
    hand back where the world is (``Resume``).

    ``open_world(recipe)`` opens a fresh seeded world; a world this process has not seen is
    restored from ``args.resume``.
    """
    if not _is_current(board.snapshot(args.slot), args):
        return
    resident, notices = _resident(args, board, worlds, open_world)
    yield from notices
    yield from _frames(args, board, resident)
    with resident.lock:
        resume = None if resident.closed else \
            Resume(args.recipe.world_id, resident.frames_done, resident.world.snapshot().portable())
    if resume is not None:
        yield resume


def _frames(args: SegmentArgs, board: ControlBoard, resident: ResidentWorld
            ) -> Iterator[EncodedFrame | Notice | Rewound]:
    """The segment's frames, each made at its time once the page has caught up."""
    return _in_order(_make_frames(args, board, resident), args.jpeg_quality)


def _make_frames(args: SegmentArgs, board: ControlBoard, resident: ResidentWorld
                 ) -> Iterator[_MadeFrame | Notice | Rewound | object]:
    """The frame loop proper; ``_FLUSH`` before it waits with time to spare (a page that is behind
    while the next frame is already due waits with at most one frame still being encoded)."""
    mapper = ControlMapper(resident.world.convention)
    pacer = _Pacer(args.fps, args.max_seconds)
    for i, n in zip(itertools.count(), itertools.count(args.first_n)):
        # 1. Wait for the page to catch up, then for the frame's time; read the freshest controls.
        if not pacer.due():
            yield _FLUSH
        snap = _wait_for_page(args, board, pacer, n)
        if isinstance(snap, Notice):
            yield snap
            return
        if snap is None:
            return
        if pacer.sleep_until_due():
            snap = board.snapshot(args.slot)
        if not _is_current(snap, args):
            return
        if time.time() >= snap.deadline:        # every way of playing counts against one allowance
            yield Notice("time", TIME_UP)
            return
        # 2. Stop a live (unscripted) world nobody has touched for a while.
        if i >= len(args.script) and time.time() - snap.t_input > args.idle_timeout_s:
            yield Notice("idle", f"Paused after {args.idle_timeout_s:.0f} s without input.")
            return
        # 3. Make the frame and hand it over.
        frame, notices = _make_frame(args, board, resident, mapper, snap, i, n)
        yield from notices
        if frame is None:
            return
        yield frame
        if pacer.frame_done():
            return
