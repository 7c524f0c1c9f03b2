"""Reality mode: the procedural simulator the embedded model learned from, behind the engine
protocol (``world_engine.protocol``), so players can walk the ground-truth world and compare it
with the model's dream.

This is the only module of the app that touches the simulator, and only once a reality world is
opened: importing the app loads none of it. The simulator's state is its own (pose, map, look), so
it neither needs nor uses history frames and cannot start from a picture; prompts pick the theme
and its modifiers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from world_engine.controls import CtrlInput
from world_engine.protocol import ControlConvention

if TYPE_CHECKING:
    from simulator.world import World

REALITY = "reality"


class RealityWorld:
    """One simulator world as an ``InteractiveWorld``; built on its first prompt or frame."""

    def __init__(self, seed: int, size: int = 64) -> None:
        self.seed, self.size = seed, size
        self.world: World | None = None
        self._look: dict[str, Any] = {}     # the newest prompt's look; a reset rebuilds with it
        self._closed = False

    @property
    def convention(self) -> ControlConvention:
        return _convention()

    def _built(self) -> World:
        if self._closed:
            raise RuntimeError("this world is closed")
        if self.world is None:
            from simulator.world import World

            self.world = World.from_seed(self.seed, size=self.size, **self._look)
        return self.world

    def set_prompt(self, text: str) -> None:
        """Re-skin the world as the theme (and time, fog, weather...) the prompt names."""
        from simulator.captions import match_prompt

        self._look = match_prompt(text).to_dict()
        if self.world is None:
            self._built()
        else:   # a running world keeps its map
            mods = {k: v for k, v in self._look.items() if k not in ("theme", "layout")}
            self.world.set_theme(self._look["theme"], **mods)

    def append_frame(self, img: np.ndarray, ctrl: CtrlInput | None = None) -> None:
        """History frames mean nothing to a simulator: its state is its own."""

    def set_steps(self, steps: int) -> None:
        """A simulator has no sampling schedule."""

    def next_frame(self, ctrl: CtrlInput | None = None) -> np.ndarray:
        return self._built().step(ctrl).rgb

    def reset(self, seed: int | None = None) -> None:
        """Back to a fresh world of the newest prompt's look; a ``seed`` picks another map."""
        if seed is not None:
            self.seed = seed
        self.world = None

    def close(self) -> None:
        self.world, self._closed = None, True


def _convention() -> ControlConvention:
    from simulator.constants import MOUSE_CAP, N_BUTTONS, POINTER_UNITS_PER_PIXEL

    return ControlConvention(n_buttons=N_BUTTONS, mouse_units_per_pixel=POINTER_UNITS_PER_PIXEL,
                             mouse_cap=MOUSE_CAP, prompted=True, takes_images=False)


class Reality:
    """The simulator as a ``WorldSource``: ``fork(seed)`` gives a fresh simulator world."""

    device = torch.device("cpu")

    @property
    def convention(self) -> ControlConvention:
        """Every simulator world's convention (so a control log can be checked before it plays)."""
        return _convention()

    def fork(self, seed: int | None = None) -> RealityWorld:
        return RealityWorld(seed or 0)
