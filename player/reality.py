"""Reality mode: the procedural simulator the embedded model learned from, behind the engine
interface, so players can walk the ground-truth world and compare it with the model's dream.

The simulator's state is its own (pose, map, look), so it neither needs nor uses history frames
and cannot start from a picture; prompts pick the theme and its modifiers.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from world_engine.controls import CtrlInput
from world_engine.sim.captions import match_prompt
from world_engine.sim.constants import N_BUTTONS
from world_engine.sim.world import World

REALITY = "reality"


class RealityWorld:
    """One simulator world with the calls the frame loop makes on an engine."""

    config = SimpleNamespace(n_buttons=N_BUTTONS, prompt_conditioning="theme")

    def __init__(self, seed: int, size: int = 64) -> None:
        self.seed, self.size = seed, size
        self.world: World | None = None

    def set_prompt(self, text: str) -> None:
        """Re-skin the world as the theme (and time, fog, weather...) the prompt names."""
        look = match_prompt(text)
        if self.world is None:
            self.world = World.from_seed(self.seed, size=self.size, **look.to_dict())
        else:
            mods = look.to_dict()
            self.world.set_theme(mods.pop("theme"), **{k: v for k, v in mods.items() if k != "layout"})

    def append_frame(self, img: np.ndarray, ctrl: CtrlInput | None = None) -> None:
        """History frames mean nothing to a simulator: its state is its own."""

    def set_steps(self, steps: int) -> None:
        """A simulator has no sampling schedule."""

    def gen_frame(self, ctrl: CtrlInput | None = None) -> np.ndarray:
        if self.world is None:
            self.world = World.from_seed(self.seed, size=self.size)
        return self.world.step(ctrl).rgb


class Reality:
    """Stands in for a loaded engine: ``fork(seed)`` gives a fresh simulator world."""

    config = RealityWorld.config

    def fork(self, seed: int | None = None) -> RealityWorld:
        return RealityWorld(seed or 0)
