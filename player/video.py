"""Recordings as animated WebP and H.264 MP4, encoded one frame at a time in a child process.

Building a 60-second video means decoding, upscaling and encoding up to 1 200 frames: seconds of
CPU and, held at once, hundreds of MB. So the app never does it in the server process:
``encode_videos`` hands the JPEGs to ``python player/video.py`` (niced, so it yields the CPU to the
frame loops of everyone playing; its memory goes back to the system when it exits). The child feeds
Pillow's WebP encoder a lazy frame source and PyAV's libx264 one frame after another, so only one
upscaled frame exists at a time. Frames are upscaled with a bicubic filter: a 64x64 world becomes
a smooth 384x384 video, not a grid of blocks.

This file imports nothing but Pillow, PyAV (in ``write_mp4``) and the standard library: the child
starts in a fraction of a second. ``python player/video.py --bench 60`` times both encoders on a
synthetic 60-second recording.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CAPS = {"w": (1, 0), "a": (0, 1), "s": (1, 1), "d": (2, 1)}
LOOK_KEYS = ("left", "right", "up", "down")
CHILD_NICENESS = 10
VIDEO_HEIGHT = 384          # px: small frames are upscaled to this
MP4_OPTIONS = {"preset": "veryfast", "crf": "20"}   # libx264: fast, visually clean at this size


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


def renderer(size: int, overlay: bool) -> Callable[[VideoFrame], Image.Image]:
    """Turns a recorded frame into a video frame: decoded, upscaled smoothly to ``size`` px high
    (an even width, as H.264's 4:2:0 chroma needs), the controls optionally drawn on."""
    font = ImageFont.load_default(size=max(10, size // 24))

    def render(frame: VideoFrame) -> Image.Image:
        img = Image.open(io.BytesIO(frame.jpeg)).convert("RGB")
        width = max(2, round(img.width * size / img.height / 2) * 2)
        img = img.resize((width, size), Image.Resampling.BICUBIC)
        if overlay:
            draw_controls(img, frame, font)
        return img

    return render


def write_webp(frames: list[VideoFrame], path: str | os.PathLike, fps: float, overlay: bool,
               size: int = VIDEO_HEIGHT) -> None:
    """Animated WebP of ``frames``, upscaled to ``size`` px high, the controls optionally drawn on."""
    if not frames:
        raise ValueError("nothing recorded yet: press Start and play a little first")
    render = renderer(size, overlay)
    options = dict(format="WEBP", save_all=True, duration=round(1000 / fps), loop=0, quality=85, method=0)
    first = render(frames[0])
    if len(frames) == 1:
        first.save(path, **options)
        return
    try:
        first.save(path, append_images=[_LazyFrames(frames[1:], render)], **options)
    except (AttributeError, TypeError):     # a Pillow whose writer wants real images: all at once
        first.save(path, append_images=[render(f) for f in frames[1:]], **options)


def write_mp4(frames: list[VideoFrame], path: str | os.PathLike, fps: float, overlay: bool,
              size: int = VIDEO_HEIGHT) -> None:
    """H.264 MP4 (yuv420p, fast start: plays in every browser and phone) of ``frames``, upscaled to
    ``size`` px high, encoded as each frame is rendered."""
    import av

    if not frames:
        raise ValueError("nothing recorded yet: press Start and play a little first")
    render = renderer(size, overlay)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        first = render(frames[0])
        stream = container.add_stream("libx264", rate=rate, options=MP4_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_image(first if i == 0 else render(frame))
            picture.pts, picture.time_base = i, 1 / rate
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))


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


WRITERS = {"webp": write_webp, "mp4": write_mp4}


def encode_videos(frames: list[VideoFrame], outputs: dict[str, Path], fps: float, overlay: bool,
                  timeout_s: float = 180.0) -> dict[str, Path]:
    """The videos ``outputs`` names (``{"webp": path, "mp4": path}``), made by one niced child
    process; ``RuntimeError`` (and no file left) if it fails or takes too long."""
    job = pickle.dumps({"frames": [(f.jpeg, f.held, f.buttons, f.dx, f.dy) for f in frames],
                        "outputs": {kind: str(path) for kind, path in outputs.items()}, "fps": fps, "overlay": overlay})

    def discard() -> None:
        for path in outputs.values():
            Path(path).unlink(missing_ok=True)

    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve())], input=job, capture_output=True,
                              timeout=timeout_s, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired as exc:
        discard()
        raise RuntimeError("making the video took too long") from exc
    if done.returncode != 0 or not all(Path(p).is_file() for p in outputs.values()):
        discard()
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the video encoder failed ({tail[0][:200]})")
    return {kind: Path(path) for kind, path in outputs.items()}


def _child() -> None:
    try:
        os.nice(CHILD_NICENESS)
    except OSError:
        pass
    job = pickle.loads(sys.stdin.buffer.read())     # written by encode_videos in our own server process
    frames = [VideoFrame(*f) for f in job["frames"]]
    for kind, path in job["outputs"].items():
        WRITERS[kind](frames, path, job["fps"], job["overlay"])


def _bench(seconds: float, fps: float = 20.0) -> None:
    """Times both encoders on ``seconds`` of synthetic 64x64 frames (a scene drifting past, with
    noise, JPEG q90 as the app streams them) with the controls drawn on."""
    import tempfile

    import numpy as np

    out = Path(tempfile.gettempdir())
    n = round(seconds * fps)
    yy, xx = np.mgrid[0:64, 0:64]
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        scene = np.stack([(xx + i) * 3 % 256, (yy * 2 + i // 2) % 256, ((xx - yy + 2 * i) * 2) % 256], -1)
        img = np.clip(scene + rng.normal(0, 4, scene.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90, subsampling=0)
        frames.append(VideoFrame(buf.getvalue(), ("w",) if i % 40 < 20 else (), (87,) if i % 40 < 20 else (), 2.0, 0.0))
    for kind, writer in WRITERS.items():
        path = out / f"bench-{seconds:.0f}s.{kind}"
        t0 = time.perf_counter()
        writer(frames, path, fps, True)
        print(f"{kind}: {n} frames ({seconds:.0f} s at {fps:.0f} fps, 64x64 -> {VIDEO_HEIGHT}x{VIDEO_HEIGHT}) "
              f"in {time.perf_counter() - t0:.2f} s, {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bench"]:
        _bench(float(sys.argv[2]) if len(sys.argv) > 2 else 60.0)
    else:
        _child()
