"""Session recording: the frames as an animated WebP (optionally with the controls drawn on) and
a JSON control log that replays the same world from the same seed.

Animated WebP needs nothing beyond Pillow. The log holds every frame's exact controls and the
frames at which the prompt or the steps changed, so a replay feeds the engine the same inputs.
"""

from __future__ import annotations

import base64
import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from player.controls import BIT, held_names
from player.stream import CtrlTuple, EncodedFrame, WorldRecipe, decode_image
from player.validation import clean_prompt, clean_steps, start_image_png

LOG_FORMAT = "world-player-log/1"
MAX_LOG_FRAMES = 72_000          # one hour at 20 fps; ~2 MB of JSON
MAX_LOG_BYTES = 8 * 1024 * 1024


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
    truncated: bool = False

    def __post_init__(self) -> None:
        self.video = deque(maxlen=self.max_video_frames)
        self._prompt, self._steps = self.prompt, self.steps

    def add(self, frame: EncodedFrame) -> None:
        index = len(self.ctrls)
        if frame.prompt != self._prompt:
            self.events.append([index, "prompt", frame.prompt])
            self._prompt = frame.prompt
        if frame.steps != self._steps:
            self.events.append([index, "steps", frame.steps])
            self._steps = frame.steps
        if index < MAX_LOG_FRAMES:
            self.ctrls.append(frame.ctrl)
        else:
            self.truncated = True
        self.video.append((frame.jpeg, frame.keys, frame.ctrl))

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

    def write_video(self, path: Path, overlay: bool, size: int = 384) -> Path:
        """Animated WebP of the kept frames, upscaled to ``size`` px high, controls optionally drawn."""
        if not self.video:
            raise ValueError("nothing recorded yet: press Start and play a little first")
        images = []
        font = ImageFont.load_default(size=max(10, size // 24))
        for jpeg, keys, ctrl in list(self.video):   # a copy: the frame loop keeps appending
            img = Image.fromarray(decode_image(jpeg))
            img = img.resize((round(img.width * size / img.height), size), Image.Resampling.BICUBIC)
            if overlay:
                _draw_controls(img, keys, ctrl, font)
            images.append(img)
        duration = round(1000 / self.fps)
        images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=duration,
                       loop=0, quality=85, method=0)
        return path


def _draw_controls(img: Image.Image, keys: int, ctrl: CtrlTuple, font: ImageFont.ImageFont) -> None:
    """Key caps for WASD (lit when held), other held keys as text, the look delta as an arrow."""
    draw = ImageDraw.Draw(img, "RGBA")
    u = img.height // 16
    x0, y0 = u, img.height - 3 * u - u // 2
    caps = {"w": (1, 0), "a": (0, 1), "s": (1, 1), "d": (2, 1)}
    buttons = set(ctrl[0])
    for name, (cx, cy) in caps.items():
        held = bool(keys & BIT[name]) or ord(name.upper()) in buttons
        box = (x0 + cx * (u + 3), y0 + cy * (u + 3), x0 + cx * (u + 3) + u, y0 + cy * (u + 3) + u)
        draw.rounded_rectangle(box, radius=u // 5, fill=(255, 210, 80, 230) if held else (0, 0, 0, 120),
                               outline=(255, 255, 255, 160))
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), name.upper(), font=font, anchor="mm",
                  fill=(20, 20, 20) if held else (235, 235, 235))
    extra = [n for n in held_names(keys) if n not in caps and n not in ("left", "right", "up", "down")]
    if extra:
        draw.text((x0 + 3 * (u + 3) + u // 2, y0 + u + 3), " ".join(extra).upper(), font=font,
                  fill=(255, 230, 150), stroke_width=2, stroke_fill=(0, 0, 0))
    dx, dy = ctrl[1], ctrl[2]
    length = math.hypot(dx, dy)
    if length > 0.05:
        cx, cy, r = img.width - 2 * u, img.height - 2 * u, 1.5 * u
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(255, 255, 255, 160), width=2)
        scale = min(1.0, length / 16) * r / length
        draw.line((cx, cy, cx + dx * scale, cy + dy * scale), fill=(255, 210, 80, 255), width=3)


@dataclass(frozen=True)
class Replay:
    """A parsed control log, ready to drive a fresh world."""

    model: str
    seed: int
    prompt: str
    steps: int
    start_image: bytes | None
    ctrls: tuple[CtrlTuple, ...]
    events: tuple[tuple[int, str, Any], ...]
    complete: bool = True          # False: the recording outgrew MAX_LOG_FRAMES and was cut


def _whole(value: Any, what: str, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise ValueError(f"{what} must be a whole number from 0 to {hi}, got {value!r}")
    return value


def _event(event: Any) -> tuple[int, str, Any]:
    """One ``[frame, "prompt"|"steps", value]`` entry, checked like the page's own prompt and steps."""
    index, kind, value = event
    index = _whole(index, "event frame", MAX_LOG_FRAMES)
    if kind == "prompt":
        if not isinstance(value, str):
            raise ValueError(f"prompt event at frame {index} must hold text, got {value!r}")
        return index, kind, clean_prompt(value)
    if kind == "steps":
        return index, kind, clean_steps(value)
    raise ValueError(f"unknown event {kind!r} at frame {index} (expected \"prompt\" or \"steps\")")


def parse_log(text: str | bytes) -> Replay:
    """Read a control log written by ``Recorder.log_json``; ``ValueError`` says what is wrong."""
    if len(text) > MAX_LOG_BYTES:
        raise ValueError(f"control log is too large ({len(text) // 1024} KiB; at most {MAX_LOG_BYTES // 1024} KiB)")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"control log is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != LOG_FORMAT:
        raise ValueError(f"not a control log (expected \"format\": \"{LOG_FORMAT}\")")
    try:
        ctrls = tuple((tuple(int(b) for b in f[0]), float(f[1]), float(f[2])) for f in data["frames"])
        if not all(math.isfinite(c[1]) and math.isfinite(c[2]) for c in ctrls):
            raise ValueError("mouse deltas must be finite")
        events = tuple(_event(e) for e in data.get("events", []))
        prompt = data.get("prompt", "")
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be text, got {prompt!r}")
        complete = data.get("complete", True)
        if not isinstance(complete, bool):
            raise ValueError(f"complete must be true or false, got {complete!r}")
        start = data.get("start_image_png")
        return Replay(model=str(data["model"]), seed=_whole(data["seed"], "seed", 2**63 - 1),
                      prompt=clean_prompt(prompt), steps=clean_steps(data.get("steps", 0)),
                      start_image=start_image_png(base64.b64decode(start, validate=True)) if start else None,
                      ctrls=ctrls, events=events, complete=complete)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ValueError(f"control log is damaged: {exc}") from exc
