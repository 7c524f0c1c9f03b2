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
# A 24-megapixel camera photo decodes to ~72 MB of RGB; the pixel count is read from the header
# before anything is decoded, so a tiny PNG that claims 40 megapixels (a decompression bomb) costs nothing.
MAX_IMAGE_PIXELS = 24_000_000
START_IMAGE_SIDE = 640          # start images are stored (and replayed) at most this large
MAX_MODEL_KEY_CHARS = 1024
MAX_REWIND_S = 60.0             # the kept history is 30 s; a longer jump goes back as far as it reaches
TOO_LARGE = "The start image is {w}x{h} pixels; that is too large (at most {mp} megapixels)."


def clean_prompt(text: object) -> str:
    """Strip a prompt and enforce its length."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError("The prompt must be text.")
    text = text.strip()
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
    """A seed in 0..2**63 - 1, as an int (the number box sends floats, a script may send "42")."""
    if isinstance(seed, str) and seed.strip().isdigit() and len(seed) < 30:
        seed = int(seed.strip())
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not math.isfinite(seed) \
            or not 0 <= seed < 2**63:
        raise ValueError("The seed must be a whole number \u2265 0.")
    return int(seed)


def clean_rewind(data: object) -> float:
    """How far back a rewind goes: ``{"seconds": s}`` from the page, 0 < s <= MAX_REWIND_S."""
    seconds = data.get("seconds") if isinstance(data, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or not 0 < seconds <= MAX_REWIND_S:
        raise ValueError(f"A rewind goes back between 0 and {MAX_REWIND_S:.0f} seconds.")
    return float(seconds)


def clean_model_key(key: object) -> str:
    """The model picker's value as text of a sane length (anything else names no model)."""
    if key is None:
        return ""
    if not isinstance(key, str):
        raise ValueError(f"Unknown model {key!r}.")
    key = key.strip()
    if len(key) > MAX_MODEL_KEY_CHARS:
        raise ValueError(f"Unknown model (a {len(key)}-character name).")
    return key


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
    """Validate start image bytes and return them as PNG bytes (at most 640 px a side).

    The size is checked from the header before any pixel is decoded; JPEGs decode at a reduced
    scale straight away (``draft``), so even a large photo never exists at full size in memory.
    """
    _check_upload_size(len(data))
    try:
        with Image.open(io.BytesIO(data)) as img:     # reads the header only
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(TOO_LARGE.format(w=w, h=h, mp=MAX_IMAGE_PIXELS // 1_000_000))
            if img.format == "JPEG":
                img.draft("RGB", (START_IMAGE_SIDE, START_IMAGE_SIDE))
            img.load()
            rgb = img.convert("RGB")
    except Image.DecompressionBombError as exc:     # Pillow's own limit, checked while opening
        raise ValueError("That image is too large (its header claims more pixels than we decode).") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError("That file is not an image we can read; please upload a PNG, JPEG or WebP.") from exc
    rgb.thumbnail((START_IMAGE_SIDE, START_IMAGE_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()
