"""Recordings as animated WebP, encoded one frame at a time in a child process.

Building a 60-second video means decoding, upscaling and encoding up to 1 200 frames: seconds of
CPU and, held at once, hundreds of MB. So the app never does it in the server process:
``encode_webp`` hands the JPEGs to ``python player/video.py`` (niced, so it yields the CPU to the
frame loops of everyone playing; its memory goes back to the system when it exits), and the child
feeds Pillow's WebP encoder a lazy frame source, so only one upscaled frame exists at a time.

This file imports nothing but Pillow and the standard library: the child starts in a fraction of
a second.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CAPS = {"w": (1, 0), "a": (0, 1), "s": (1, 1), "d": (2, 1)}
LOOK_KEYS = ("left", "right", "up", "down")
CHILD_NICENESS = 10


@dataclass(frozen=True)
class VideoFrame:
    """One recorded frame: its JPEG, the names of the keys held and the controls the world got."""

    jpeg: bytes
    held: tuple[str, ...]
    buttons: tuple[int, ...]
    dx: float
    dy: float


class _LazyFrames:
    """Looks to Pillow's WebP writer like a multi-frame image whose frames are made on ``seek``."""

    mode = "RGB"
    has_transparency_data = False

    def __init__(self, frames: list[VideoFrame], render) -> None:
        self.n_frames = len(frames)
        self._frames, self._render, self._current = frames, render, None

    def seek(self, index: int) -> None:
        self._current = self._render(self._frames[index])

    def getim(self):
        return self._current.getim()


def write_webp(frames: list[VideoFrame], path: str | os.PathLike, fps: float, overlay: bool, size: int = 384) -> None:
    """Animated WebP of ``frames``, upscaled to ``size`` px high, the controls optionally drawn on."""
    if not frames:
        raise ValueError("nothing recorded yet: press Start and play a little first")
    font = ImageFont.load_default(size=max(10, size // 24))

    def render(frame: VideoFrame) -> Image.Image:
        img = Image.open(io.BytesIO(frame.jpeg)).convert("RGB")
        img = img.resize((round(img.width * size / img.height), size), Image.Resampling.BICUBIC)
        if overlay:
            draw_controls(img, frame, font)
        return img

    options = dict(format="WEBP", save_all=True, duration=round(1000 / fps), loop=0, quality=85, method=0)
    first = render(frames[0])
    if len(frames) == 1:
        first.save(path, **options)
        return
    try:
        first.save(path, append_images=[_LazyFrames(frames[1:], render)], **options)
    except (AttributeError, TypeError):     # a Pillow whose writer wants real images: all at once
        first.save(path, append_images=[render(f) for f in frames[1:]], **options)


def draw_controls(img: Image.Image, frame: VideoFrame, font: ImageFont.ImageFont) -> None:
    """Key caps for WASD (lit when held), other held keys as text, the look delta as an arrow."""
    draw = ImageDraw.Draw(img, "RGBA")
    u = img.height // 16
    x0, y0 = u, img.height - 3 * u - u // 2
    buttons = set(frame.buttons)
    for name, (cx, cy) in CAPS.items():
        held = name in frame.held or ord(name.upper()) in buttons
        box = (x0 + cx * (u + 3), y0 + cy * (u + 3), x0 + cx * (u + 3) + u, y0 + cy * (u + 3) + u)
        draw.rounded_rectangle(box, radius=u // 5, fill=(255, 210, 80, 230) if held else (0, 0, 0, 120),
                               outline=(255, 255, 255, 160))
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), name.upper(), font=font, anchor="mm",
                  fill=(20, 20, 20) if held else (235, 235, 235))
    extra = [n for n in frame.held if n not in CAPS and n not in LOOK_KEYS]
    if extra:
        draw.text((x0 + 3 * (u + 3) + u // 2, y0 + u + 3), " ".join(extra).upper(), font=font,
                  fill=(255, 230, 150), stroke_width=2, stroke_fill=(0, 0, 0))
    length = math.hypot(frame.dx, frame.dy)
    if length > 0.05:
        cx, cy, r = img.width - 2 * u, img.height - 2 * u, 1.5 * u
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(255, 255, 255, 160), width=2)
        scale = min(1.0, length / 16) * r / length
        draw.line((cx, cy, cx + frame.dx * scale, cy + frame.dy * scale), fill=(255, 210, 80, 255), width=3)


def encode_webp(frames: list[VideoFrame], path: Path, fps: float, overlay: bool, timeout_s: float = 120.0) -> Path:
    """``write_webp`` in a niced child process; ``RuntimeError`` if it fails or takes too long."""
    job = pickle.dumps({"frames": [(f.jpeg, f.held, f.buttons, f.dx, f.dy) for f in frames], "path": str(path),
                        "fps": fps, "overlay": overlay})
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve())], input=job, capture_output=True,
                              timeout=timeout_s, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired as exc:
        Path(path).unlink(missing_ok=True)
        raise RuntimeError("making the video took too long") from exc
    if done.returncode != 0 or not Path(path).is_file():
        Path(path).unlink(missing_ok=True)
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the video encoder failed ({tail[0][:200]})")
    return Path(path)


def _child() -> None:
    try:
        os.nice(CHILD_NICENESS)
    except OSError:
        pass
    job = pickle.loads(sys.stdin.buffer.read())     # written by encode_webp in our own server process
    frames = [VideoFrame(*f) for f in job["frames"]]
    write_webp(frames, job["path"], job["fps"], job["overlay"])


if __name__ == "__main__":
    _child()
