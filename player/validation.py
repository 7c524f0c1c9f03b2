"""Checks shared by the handlers and the control-log reader, so a value loaded from a log passes
exactly the test the same value typed or uploaded in the page does. Each raises ``ValueError``
with a message fit to show the player."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MAX_PROMPT_CHARS = 500
MAX_STEPS = 8                   # denoising steps; 0 keeps the model's own schedule
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
START_IMAGE_SIDE = 640          # start images are stored (and replayed) at most this large


def clean_prompt(text: str | None) -> str:
    """Strip a prompt and enforce its length."""
    text = (text or "").strip()
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"The prompt is {len(text)} characters long; please keep it under "
                         f"{MAX_PROMPT_CHARS}.")
    return text


def clean_steps(steps: object) -> int:
    """A whole number of denoising steps in 0..MAX_STEPS (the slider sends floats such as 2.0)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or steps not in range(MAX_STEPS + 1):
        raise ValueError(f"Steps must be a whole number from 0 to {MAX_STEPS} "
                         f"(0 keeps the model's own schedule).")
    return int(steps)


def clean_seed(seed: object) -> int:
    """A seed in 0..2**63 - 1, as an int (the number box sends floats)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not math.isfinite(seed) \
            or not 0 <= seed < 2**63:
        raise ValueError("The seed must be a whole number \u2265 0.")
    return int(seed)


def _check_upload_size(size: int) -> None:
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"The start image is {size / 2**20:.0f} MB; the limit is "
                         f"{MAX_UPLOAD_BYTES // 2**20} MB.")


def read_start_image(path: str | os.PathLike | None) -> bytes | None:
    """Validate an uploaded start image file; see ``start_image_png``."""
    if not path:
        return None
    _check_upload_size(os.path.getsize(path))    # before reading it into memory
    return start_image_png(Path(path).read_bytes())


def start_image_png(data: bytes) -> bytes:
    """Validate start image bytes and return them as PNG bytes (at most 640 px a side)."""
    _check_upload_size(len(data))
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"The start image is {img.width}x{img.height} pixels; that is too large.")
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError("That file is not an image we can read; please upload a PNG, JPEG or WebP.") from exc
    rgb.thumbnail((START_IMAGE_SIDE, START_IMAGE_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()
