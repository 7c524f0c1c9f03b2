"""``WorldPlayer``: a reusable ``gr.HTML`` component that shows a streamed world and captures
keyboard, mouse-look, virtual joystick and gamepad input.

The template holds a ``<canvas>`` and never ``${value}``, so streaming a value per frame does not
re-create the DOM; the JS draws each value's JPEG and keeps only the newest pending frame. Input
reaches Python through the custom ``control`` event (``player.control(fn, queue=False, ...)``).
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from player.controls import JS_KEYMAP, KEY_NAMES

_HERE = Path(__file__).parent


class WorldPlayer(gr.HTML):
    """Canvas world view with all input capture in its JS (see ``player.js``)."""

    def __init__(self, value: dict[str, Any] | None = None, *, message: str = "",
                 pointer_lock: bool = True, **kwargs: Any) -> None:
        super().__init__(
            value=value,
            html_template=(_HERE / "player.html").read_text(encoding="utf-8"),
            css_template=(_HERE / "player.css").read_text(encoding="utf-8"),
            js_on_load=(_HERE / "player.js").read_text(encoding="utf-8"),
            keymap=JS_KEYMAP,
            key_names=list(KEY_NAMES),
            message=message,
            pointer_lock=pointer_lock,
            **kwargs,
        )


def frame_value(n: int, seq: int, jpeg: bytes, width: int, height: int, hud: str = "",
                msg: str = "", back: float | None = None, psnr: float | None = None) -> dict[str, Any]:
    """The player value for one frame: a JPEG data URL plus what the overlay and acks need, how
    many seconds the timeline reaches back (``back``) and, for a split world, its PSNR."""
    value = {"n": n, "seq": seq, "w": width, "h": height, "hud": hud, "msg": msg,
             "img": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")}
    if back is not None:
        value["back"] = round(back, 2)
    if psnr is not None:
        value["psnr"] = round(psnr, 2) if math.isfinite(psnr) else None
        value["split"] = True
    return value


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """``(width, height)`` from a JPEG's header."""
    with Image.open(io.BytesIO(jpeg)) as img:
        return img.size


def message_value(msg: str) -> dict[str, Any]:
    """A player value that only shows (or, with ``""``, clears) the centred message."""
    return {"msg": msg}
