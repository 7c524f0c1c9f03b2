"""Player controls: the key table shared with the page, the control state the page sends, the
per-frame mapping to ``CtrlInput`` and the scripted camera paths (``w*8,a*4,left*6``).

The page sends its *full* control state (held keys as a bitmask, stick vectors, cumulative look
totals) rather than key events, so a lost or reordered message never leaves a key stuck and the
server only ever needs the newest state. Pointer pixels become mouse units by the world's own
``ControlConvention``: each model was trained on its own scale.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from world_engine.controls import VK, CtrlInput
from world_engine.protocol import ControlConvention

# (name in scripts, aliases, browser KeyboardEvent.code values, Windows VK code or None for look keys)
_KEY_TABLE: tuple[tuple[str, tuple[str, ...], tuple[str, ...], int | None], ...] = (
    ("w", (), ("KeyW",), VK["W"]),
    ("a", (), ("KeyA",), VK["A"]),
    ("s", (), ("KeyS",), VK["S"]),
    ("d", (), ("KeyD",), VK["D"]),
    ("space", ("jump",), ("Space",), VK["SPACE"]),
    ("shift", ("sprint",), ("ShiftLeft", "ShiftRight"), VK["SHIFT"]),
    ("ctrl", ("crouch",), ("ControlLeft", "ControlRight", "KeyC"), VK["CTRL"]),
    ("e", ("use",), ("KeyE",), VK["E"]),
    ("left", (), ("ArrowLeft",), None),
    ("right", (), ("ArrowRight",), None),
    ("up", (), ("ArrowUp",), None),
    ("down", (), ("ArrowDown",), None),
)
KEY_NAMES: tuple[str, ...] = tuple(row[0] for row in _KEY_TABLE)
BIT = {name: 1 << i for i, name in enumerate(KEY_NAMES)}
ALL_KEYS_MASK = (1 << len(KEY_NAMES)) - 1
# e.code -> bit, handed to the page's JS so both sides read one table.
JS_KEYMAP: dict[str, int] = {code: BIT[row[0]] for row in _KEY_TABLE for code in row[2]}
_SCRIPT_NAMES: dict[str, str] = {alias: row[0] for row in _KEY_TABLE for alias in (row[0], *row[1])}
_SCRIPT_NAMES.update({"idle": "", "wait": "", "_": ""})

STICK_THRESHOLD = 0.3   # stick deflection that presses the matching WASD key
# A full look-stick deflection or an arrow key turns, per frame, as far as this many pointer pixels:
# 8 units (4 degrees) of the simulator and the embedded model, which take 0.3 units per pixel.
LOOK_RATE_PIXELS = 8 / 0.3
MAX_SCRIPT_CHARS = 5000
MAX_SCRIPT_FRAMES = 20000
MAX_REPEAT = 1000
VK_LIMIT = 256                        # Windows virtual-key codes are 0..255
FLOAT32_MAX = 3.4028234663852886e38   # the engines build their control vectors in float32


def finite32(value: object) -> bool:
    """A real number that stays finite as a float32 (1e39 does not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and abs(value) <= FLOAT32_MAX


@dataclass(frozen=True)
class ControlState:
    """One snapshot of everything the player holds, as the page sends it.

    ``look_x/look_y`` are cumulative pointer movement since the page loaded (differenced per frame
    on the server, so no movement is lost when messages are dropped); ``move_*``/``stick_*`` are
    analog vectors in [-1, 1]; ``ack`` is the newest frame number the page has drawn.
    """

    seq: int = 0
    keys: int = 0
    move_x: float = 0.0
    move_y: float = 0.0
    look_x: float = 0.0
    look_y: float = 0.0
    stick_x: float = 0.0
    stick_y: float = 0.0
    ack: int = -1
    visible: bool = True
    client_fps: float = 0.0
    client_latency_ms: float = 0.0


def _number(data: dict[str, Any], key: str, what: str, lo: float, hi: float) -> float:
    value = data.get(key, 0)
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return min(max(float(value), lo), hi)


MAX_COUNTER = 2**53     # seq and ack are JS numbers, exact up to here; the board stores doubles


def _integer(data: dict[str, Any], key: str, what: str, default: int, lo: int) -> int:
    value = data.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not lo <= value <= MAX_COUNTER:
        raise ValueError(f"{what} must be between {lo} and 2**53")
    return value


def parse_state(data: Any) -> ControlState:
    """Validate the page's control message; raise ``ValueError`` with a readable reason."""
    if not isinstance(data, dict):
        raise ValueError("control state must be an object")
    seq = _integer(data, "seq", "seq", 0, 0)
    keys = _integer(data, "keys", "held keys", 0, 0)
    if not 0 <= keys <= ALL_KEYS_MASK:
        raise ValueError(f"held keys bitmask {keys} has unknown keys (known: {', '.join(KEY_NAMES)})")
    big = 1e12
    return ControlState(
        seq=seq,
        keys=keys,
        move_x=_number(data, "mx", "move stick x", -1, 1),
        move_y=_number(data, "my", "move stick y", -1, 1),
        look_x=_number(data, "lx", "look delta x", -big, big),
        look_y=_number(data, "ly", "look delta y", -big, big),
        stick_x=_number(data, "sx", "look stick x", -1, 1),
        stick_y=_number(data, "sy", "look stick y", -1, 1),
        ack=_integer(data, "ack", "acknowledged frame", -1, -1),
        visible=bool(data.get("vis", True)),
        client_fps=_number(data, "fps", "client fps", 0, 1000),
        client_latency_ms=_number(data, "lat", "client latency", 0, 1e6),
    )


def held_names(keys: int) -> list[str]:
    """Names of the keys set in a bitmask, in table order (for overlays and logs)."""
    return [name for name in KEY_NAMES if keys & BIT[name]]


class ControlMapper:
    """Turns the newest control state into the ``CtrlInput`` of the next frame.

    Keeps the previous cumulative look totals, so each frame receives exactly the pointer
    movement since the frame before, however many messages arrived in between. Pointer pixels and
    look rates are scaled to the world's mouse units and clamped to its cap, if it has one.
    """

    def __init__(self, convention: ControlConvention) -> None:
        self.convention = convention
        self.look_rate = LOOK_RATE_PIXELS * convention.mouse_units_per_pixel
        self._last_look: tuple[float, float] | None = None

    def frame(self, state: ControlState, script_keys: int | None = None) -> CtrlInput:
        """The next frame's controls; with ``script_keys`` the live input is ignored for it."""
        last = self._last_look
        self.follow(state)
        if script_keys is not None:
            keys, stick_x, stick_y, dx, dy = script_keys, 0.0, 0.0, 0.0, 0.0
        else:
            keys, stick_x, stick_y = state.keys, state.stick_x, state.stick_y
            if state.move_y < -STICK_THRESHOLD:
                keys |= BIT["w"]
            if state.move_y > STICK_THRESHOLD:
                keys |= BIT["s"]
            if state.move_x < -STICK_THRESHOLD:
                keys |= BIT["a"]
            if state.move_x > STICK_THRESHOLD:
                keys |= BIT["d"]
            per_pixel = self.convention.mouse_units_per_pixel
            dx = (state.look_x - last[0]) * per_pixel if last else 0.0
            dy = (state.look_y - last[1]) * per_pixel if last else 0.0
        rate_x = stick_x + bool(keys & BIT["right"]) - bool(keys & BIT["left"])
        rate_y = stick_y + bool(keys & BIT["down"]) - bool(keys & BIT["up"])
        dx += max(-1.0, min(1.0, rate_x)) * self.look_rate
        dy += max(-1.0, min(1.0, rate_y)) * self.look_rate
        return self.checked(CtrlInput(button=self.buttons(keys), mouse=(dx, dy)))

    def checked(self, ctrl: CtrlInput) -> CtrlInput:
        """The one gate every frame's controls pass, live, scripted or replayed: only buttons this
        model knows, mouse deltas finite in float32 and clamped to the model's cap (if it has one).
        ``ValueError`` for a delta that is not a finite float32."""
        dx, dy = ctrl.mouse
        if not (finite32(dx) and finite32(dy)):
            raise ValueError(f"mouse deltas must be finite float32 numbers, got {ctrl.mouse!r}")
        dx, dy = float(dx), float(dy)
        cap = self.convention.mouse_cap
        if cap is not None:
            dx, dy = (max(-cap, min(cap, v)) for v in (dx, dy))
        buttons = {b for b in ctrl.button if 0 <= b < self.convention.n_buttons}
        return CtrlInput(button=buttons, mouse=(dx, dy), scroll_wheel=ctrl.scroll_wheel)

    def follow(self, state: ControlState) -> None:
        """Take the state's look totals as the baseline without producing a frame."""
        self._last_look = (state.look_x, state.look_y)

    def buttons(self, keys: int) -> set[int]:
        """VK codes of the held keys that this model knows (look keys are not buttons)."""
        ids = {vk for name, _, _, vk in _KEY_TABLE if vk is not None and keys & BIT[name]}
        return {b for b in ids if b < self.convention.n_buttons}


_ITEM = re.compile(r"^(?P<names>[a-z_]+(?:\s*\+\s*[a-z_]+)*)\s*(?:\*\s*(?P<count>\d+))?$")


def parse_script(text: str) -> list[int]:
    """Parse a camera path such as ``w*8, a+left*4, idle*3`` into one key bitmask per frame.

    Items are separated by commas or new lines; ``+`` holds several keys at once; ``*N``
    repeats the item for N frames. Raises ``ValueError`` naming the first bad item.
    """
    if len(text) > MAX_SCRIPT_CHARS:
        raise ValueError(f"script is too long ({len(text)} characters; at most {MAX_SCRIPT_CHARS})")
    frames: list[int] = []
    items = [item.strip() for item in re.split(r"[,\n;]", text.lower())]
    for index, item in enumerate((i for i in items if i), start=1):
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"script item {index} ({item!r}) is not like 'w*8' or 'w+left*4'")
        mask = 0
        for name in re.split(r"\s*\+\s*", match["names"]):
            if name not in _SCRIPT_NAMES:
                known = ", ".join(sorted(_SCRIPT_NAMES))
                raise ValueError(f"unknown key {name!r} in script item {index} ({item!r}); known: {known}")
            mask |= BIT.get(_SCRIPT_NAMES[name], 0)
        count = int(match["count"] or 1)
        if not 1 <= count <= MAX_REPEAT:
            raise ValueError(f"script item {index} ({item!r}): repeat count must be 1..{MAX_REPEAT}")
        frames.extend([mask] * count)
        if len(frames) > MAX_SCRIPT_FRAMES:
            raise ValueError(f"script is longer than {MAX_SCRIPT_FRAMES} frames")
    return frames
