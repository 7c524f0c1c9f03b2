"""Session recording: the frames as an animated WebP and an H.264 MP4 (optionally with the controls
drawn on) and a JSON control log that replays the same world from the same seed.

Both videos are encoded out of process (``player.video``). The log holds every frame's exact
controls and the frames at which the prompt or the steps changed or the model was re-synced with
reality, so a replay feeds the engine the same inputs. A rewind cuts the recording back to the
point the world returned to: what remains is the world's one history, and it replays exactly. A log is untrusted input: ``parse_log`` caps its bytes,
frames and events before converting anything, checks every frame as live input is checked, and
keeps the replay compact (two arrays, not a Python object per frame).
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from player.controls import VK_LIMIT, finite32, held_names
from player.stream import CtrlTuple, EncodedFrame, WorldRecipe
from player.validation import clean_prompt, clean_steps, start_image_png
from player.video import VideoFrame, encode_videos

LOG_FORMAT = "world-player-log/1"
MAX_LOG_FRAMES = 12_000          # ten minutes at 20 fps (the longest play); ~0.6 MB of JSON
MAX_LOG_EVENTS = 2_000           # prompt and steps changes in one log
MAX_LOG_BYTES = 4 * 1024 * 1024  # frames, events and a 640 px start image with room to spare
# Every frame is "[[buttons...],dx,dy]" (two brackets) and every event one: more brackets than this
# and the log cannot be one we would replay, so it is refused before the JSON parser sees it.
_MAX_BRACKETS = 2 * MAX_LOG_FRAMES + 2 * MAX_LOG_EVENTS + 64


@dataclass
class Recorder:
    """Keeps the newest frames for the video and every frame's controls for the log."""

    recipe: WorldRecipe
    prompt: str
    steps: int
    fps: float
    max_video_frames: int = 1200
    video: deque = field(init=False)
    ctrls: list[CtrlTuple] = field(default_factory=list)
    events: list[list[Any]] = field(default_factory=list)
    frames: int = 0                 # frames in the world's history (the log keeps the first MAX_LOG_FRAMES)

    def __post_init__(self) -> None:
        self.video = deque(maxlen=self.max_video_frames)
        self._prompt, self._steps = self.prompt, self.steps
        self._events_cut = False

    @property
    def truncated(self) -> bool:
        """The log lacks frames or events the world had (it outgrew its limits)."""
        return self.frames > len(self.ctrls) or self._events_cut

    def add(self, frame: EncodedFrame) -> None:
        index = self.frames
        if frame.resynced:
            self._event([index, "resync", None])
        if frame.prompt != self._prompt:
            self._event([index, "prompt", frame.prompt])
            self._prompt = frame.prompt
        if frame.steps != self._steps:
            self._event([index, "steps", frame.steps])
            self._steps = frame.steps
        if index < MAX_LOG_FRAMES:
            self.ctrls.append(frame.ctrl)
        self.frames += 1
        self.video.append((frame.jpeg, frame.keys, frame.ctrl))

    def _event(self, event: list[Any]) -> None:
        if len(self.events) < MAX_LOG_EVENTS:
            self.events.append(event)
        else:
            self._events_cut = True

    def truncate(self, frames: int) -> None:
        """Forget every frame from ``frames`` on (the world was rewound to that point), with the
        events at those frames; the prompt and steps in force go back with them."""
        if frames >= self.frames:
            return
        for _ in range(min(self.frames - frames, len(self.video))):
            self.video.pop()
        del self.ctrls[frames:]
        self.events = [e for e in self.events if e[0] < frames]
        self._prompt, self._steps = self.prompt, self.steps
        for _, kind, value in self.events:
            if kind == "prompt":
                self._prompt = value
            elif kind == "steps":
                self._steps = value
        self.frames = frames

    def jpeg(self, index: int) -> bytes | None:
        """The JPEG of frame ``index`` if the video still holds it."""
        pos = index - (self.frames - len(self.video))
        return self.video[pos][0] if 0 <= pos < len(self.video) and index >= 0 else None

    def __len__(self) -> int:
        return len(self.ctrls)

    def log_json(self) -> str:
        """The control log; replaying it from the same seed reproduces the world."""
        start = self.recipe.start_image
        return json.dumps({
            "format": LOG_FORMAT,
            "model": self.recipe.model,
            "seed": self.recipe.seed,
            "prompt": self.prompt,
            "steps": self.steps,
            "fps": self.fps,
            "start_image_png": base64.b64encode(start).decode() if start else None,
            "complete": not self.truncated,
            "events": self.events,
            "frames": [[list(b), dx, dy] for b, dx, dy in self.ctrls],
        }, separators=(",", ":"))

    def video_frames(self) -> list[VideoFrame]:
        """The kept frames, as the video encoder takes them (a copy: the frame loop keeps appending)."""
        return [VideoFrame(jpeg, tuple(held_names(keys)), tuple(ctrl[0]), ctrl[1], ctrl[2])
                for jpeg, keys, ctrl in list(self.video)]

    def write_videos(self, webp: Path, mp4: Path, overlay: bool) -> tuple[Path, Path]:
        """Animated WebP and H.264 MP4 of the kept frames (upscaled, controls optionally drawn),
        made out of process."""
        frames = self.video_frames()
        if not frames:
            raise ValueError("nothing recorded yet: press Start and play a little first")
        encode_videos(frames, {"webp": webp, "mp4": mp4}, self.fps, overlay)
        return webp, mp4


class ReplayFrames(Sequence):
    """A replay's per-frame controls, compact: the distinct button sets, one index per frame into
    them, and the mouse deltas as one float64 array. Sliceable; items are ``CtrlTuple``s."""

    __slots__ = ("buttons", "index", "mouse")

    def __init__(self, buttons: tuple[tuple[int, ...], ...], index: np.ndarray, mouse: np.ndarray) -> None:
        self.buttons, self.index, self.mouse = buttons, index, mouse

    @classmethod
    def of(cls, ctrls: Sequence[CtrlTuple]) -> "ReplayFrames":
        table: dict[tuple[int, ...], int] = {}
        index = np.array([table.setdefault(tuple(c[0]), len(table)) for c in ctrls], dtype=np.uint32)
        mouse = np.array([(c[1], c[2]) for c in ctrls], dtype=np.float64).reshape(-1, 2)
        return cls(tuple(table), index, mouse)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ReplayFrames(self.buttons, self.index[i], self.mouse[i])
        return self.buttons[int(self.index[i])], float(self.mouse[i, 0]), float(self.mouse[i, 1])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplayFrames) and list(self) == list(other)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.mouse.nbytes + sum(8 * len(b) + 56 for b in self.buttons)

    def max_button(self) -> int:
        return max((max(b) for b in self.buttons if b), default=-1)


@dataclass(frozen=True)
class Replay:
    """A parsed control log, ready to drive a fresh world."""

    model: str
    seed: int
    prompt: str
    steps: int
    start_image: bytes | None
    ctrls: ReplayFrames
    events: tuple[tuple[int, str, Any], ...]
    complete: bool = True          # False: the recording outgrew MAX_LOG_FRAMES and was cut


def _whole(value: Any, what: str, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise ValueError(f"{what} must be a whole number from 0 to {hi}, got {value!r}")
    return value


def _event(event: Any) -> tuple[int, str, Any]:
    """One ``[frame, "prompt"|"steps"|"resync", value]`` entry, checked like the page's own prompt
    and steps (a re-sync holds no value)."""
    index, kind, value = event
    index = _whole(index, "event frame", MAX_LOG_FRAMES)
    if kind == "prompt":
        if not isinstance(value, str):
            raise ValueError(f"prompt event at frame {index} must hold text, got {value!r}")
        return index, kind, clean_prompt(value)
    if kind == "steps":
        return index, kind, clean_steps(value)
    if kind == "resync":
        if value is not None:
            raise ValueError(f"resync event at frame {index} holds no value, got {value!r}")
        return index, kind, None
    raise ValueError(f"unknown event {kind!r} at frame {index} (expected \"prompt\", \"steps\" or \"resync\")")


def _frame(frame: Any, index: int) -> CtrlTuple:
    """One ``[[buttons...], dx, dy]`` entry, checked as live input is: known virtual-key codes and
    deltas that stay finite in float32 (the mouse cap is applied at play, by the world's convention)."""
    if not isinstance(frame, list) or len(frame) != 3 or not isinstance(frame[0], list):
        raise ValueError(f"frame {index} must be [[buttons...], dx, dy]")
    buttons, dx, dy = frame
    if len(buttons) > VK_LIMIT:
        raise ValueError(f"frame {index} holds too many buttons")
    for b in buttons:
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < VK_LIMIT:
            raise ValueError(f"frame {index}: button {b!r} is not a key code (0..{VK_LIMIT - 1})")
    if not (finite32(dx) and finite32(dy)):
        raise ValueError(f"frame {index}: mouse deltas must be finite float32 numbers, got {dx!r}, {dy!r}")
    return tuple(sorted(set(buttons))), float(dx), float(dy)


def parse_log(text: str | bytes) -> Replay:
    """Read a control log written by ``Recorder.log_json``; ``ValueError`` says what is wrong.

    Bounded before any parsing: at most ``MAX_LOG_BYTES`` and a bracket count that fits
    ``MAX_LOG_FRAMES`` frames, so the JSON parser (which holds the interpreter lock while it runs)
    only ever sees a log small enough to parse in a few milliseconds.
    """
    if len(text) > MAX_LOG_BYTES:
        raise ValueError(f"control log is too large ({len(text) // 1024} KiB; at most {MAX_LOG_BYTES // 1024} KiB)")
    if text.count(b"[" if isinstance(text, bytes) else "[") > _MAX_BRACKETS:
        raise ValueError(f"control log has too many frames (at most {MAX_LOG_FRAMES}, ten minutes at 20 fps)")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"control log is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != LOG_FORMAT:
        raise ValueError(f"not a control log (expected \"format\": \"{LOG_FORMAT}\")")
    try:
        frames = data["frames"]
        if not isinstance(frames, list):
            raise ValueError("frames must be a list")
        if len(frames) > MAX_LOG_FRAMES:
            raise ValueError(f"it has {len(frames)} frames; at most {MAX_LOG_FRAMES} can be replayed")
        ctrls = ReplayFrames.of([_frame(f, i) for i, f in enumerate(frames)])
        events = data.get("events", [])
        if not isinstance(events, list) or len(events) > MAX_LOG_EVENTS:
            raise ValueError(f"events must be a list of at most {MAX_LOG_EVENTS}")
        events = tuple(_event(e) for e in events)
        prompt = data.get("prompt", "")
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be text, got {prompt!r}")
        complete = data.get("complete", True)
        if not isinstance(complete, bool):
            raise ValueError(f"complete must be true or false, got {complete!r}")
        model = data["model"]
        if not isinstance(model, str):
            raise ValueError(f"model must be text, got {model!r}")
        start = data.get("start_image_png")
        if start is not None and not isinstance(start, str):
            raise ValueError("start_image_png must be base64 text")
        return Replay(model=model, seed=_whole(data["seed"], "seed", 2**63 - 1),
                      prompt=clean_prompt(prompt), steps=clean_steps(data.get("steps", 0)),
                      start_image=start_image_png(base64.b64decode(start, validate=True)) if start else None,
                      ctrls=ctrls, events=events, complete=complete)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ValueError(f"control log is damaged: {exc}") from exc
