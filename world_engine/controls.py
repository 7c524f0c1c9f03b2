"""Per-frame player controls, in the Waypoint convention.

Buttons are Windows virtual-key codes (as Owl-Control records them), the mouse is the per-frame
delta ``(dx, dy)`` in the model's own units (its config's ``mouse_units_per_pixel`` says how many a
pointer pixel is) and only the sign of the scroll wheel matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# Windows virtual-key codes used by the app, the simulator and the shipped model.
VK = {
    "LBUTTON": 0x01, "RBUTTON": 0x02, "MBUTTON": 0x04,
    "TAB": 0x09, "ENTER": 0x0D, "SHIFT": 0x10, "CTRL": 0x11, "SPACE": 0x20,
    "LEFT": 0x25, "UP": 0x26, "RIGHT": 0x27, "DOWN": 0x28,
    **{chr(c): c for c in range(ord("A"), ord("Z") + 1)},
    **{str(d): 0x30 + d for d in range(10)},
}


@dataclass
class CtrlInput:
    """The controls held during one frame: button ids, mouse delta and scroll direction."""

    button: set[int] = field(default_factory=set)
    mouse: tuple[float, float] = (0.0, 0.0)
    scroll_wheel: int = 0


def validate_ctrl(ctrl: CtrlInput | None, n_buttons: int, dtype: torch.dtype = torch.float32) -> CtrlInput:
    """Return ``ctrl`` (or an idle input) after checking it fits a model with ``n_buttons``.

    Mouse deltas must be finite *in ``dtype``*, the precision the control vector is built in
    (``ctrl_vector`` makes float32): 1e39 is a finite Python float but infinity in float32, and an
    infinite control would poison the world's state for good.
    """
    if ctrl is None:
        return CtrlInput()
    if not isinstance(ctrl, CtrlInput):
        raise ValueError(f"controls must be a CtrlInput, got {type(ctrl).__name__}")
    for b in ctrl.button:
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < n_buttons:
            raise ValueError(f"unknown button id {b!r}: this model knows ids 0..{n_buttons - 1}")
    if len(ctrl.mouse) != 2:
        raise ValueError(f"mouse must be a (dx, dy) pair, got {ctrl.mouse!r}")
    limit = torch.finfo(dtype).max
    for v in ctrl.mouse:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"mouse deltas must be finite numbers, got {ctrl.mouse!r}")
        if abs(v) > limit:
            raise ValueError(f"mouse deltas must be finite in {str(dtype).removeprefix('torch.')}, "
                             f"got {ctrl.mouse!r}")
    if isinstance(ctrl.scroll_wheel, bool) or not isinstance(ctrl.scroll_wheel, int):
        raise ValueError(f"scroll_wheel must be an int, got {ctrl.scroll_wheel!r}")
    return ctrl


def ctrl_vector(ctrl: CtrlInput, n_buttons: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The model's control input ``[mouse_x, mouse_y, buttons(n_buttons), scroll_sign]``.

    Writes into ``out`` when given (a preallocated ``[n_buttons + 3]`` tensor) to avoid
    per-frame allocations.
    """
    values = [0.0] * (n_buttons + 3)
    values[0], values[1] = float(ctrl.mouse[0]), float(ctrl.mouse[1])
    for b in ctrl.button:
        values[2 + b] = 1.0
    values[-1] = float((ctrl.scroll_wheel > 0) - (ctrl.scroll_wheel < 0))
    vec = torch.tensor(values, dtype=torch.float32)
    if out is None:
        return vec
    return out.copy_(vec)
