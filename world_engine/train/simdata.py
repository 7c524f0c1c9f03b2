"""Render training episodes with the simulator under a scripted data policy.

The policy is a semi-Markov mixture (recipe §4.1): a mode is held for a geometric number of frames
(mean 8) and chosen from explore (W plus a drifting yaw), strafe/back, look around in place, idle,
turn in place at a constant rate, and uniformly random keys; jumps, crouch, sprint and E are
sprinkled in. Every episode draws from its own seeded generator, so a seed means the same actions.
"""

from __future__ import annotations

import numpy as np
import torch

from ..sim.constants import (CTRL_DIM, KEY_BACK, KEY_CROUCH, KEY_FORWARD, KEY_JUMP, KEY_LEFT, KEY_RIGHT,
                             KEY_SPRINT, KEY_USE, MOUSE_CAP)
from ..sim.themes import THEME_NAMES
from ..sim.world import EpisodeSpec, WorldBatch
from .config import DataConfig

MODES = ("explore", "strafe", "look", "idle", "turn", "random")
MODE_P = (0.40, 0.10, 0.15, 0.12, 0.13, 0.10)
MOVE_KEYS = (KEY_FORWARD, KEY_LEFT, KEY_BACK, KEY_RIGHT)


class Policy:
    """Per-episode scripted controls; ``step()`` returns float32 ``[B, CTRL_DIM]``."""

    def __init__(self, seeds: list[int]) -> None:
        self.rngs = [np.random.default_rng([s, 7]) for s in seeds]
        self.mode = ["idle"] * len(seeds)
        self.left = [0] * len(seeds)
        self.yaw_rate = np.zeros(len(seeds))
        self.keys: list[tuple[int, ...]] = [()] * len(seeds)

    def _new_mode(self, i: int) -> None:
        g = self.rngs[i]
        self.mode[i] = MODES[g.choice(len(MODES), p=MODE_P)]
        self.left[i] = int(g.geometric(1 / 8))
        self.yaw_rate[i] = 0.0
        if self.mode[i] == "turn":
            self.yaw_rate[i] = g.choice([-1, 1]) * g.integers(3, 17)
        elif self.mode[i] == "strafe":
            self.keys[i] = (int(g.choice([KEY_LEFT, KEY_RIGHT, KEY_BACK])),)
        elif self.mode[i] == "random":
            self.keys[i] = tuple(int(k) for k in MOVE_KEYS if g.random() < 0.3)

    def step(self) -> torch.Tensor:
        out = torch.zeros(len(self.rngs), CTRL_DIM)
        for i, g in enumerate(self.rngs):
            if self.left[i] <= 0:
                self._new_mode(i)
            self.left[i] -= 1
            mode, keys, dx, dy = self.mode[i], (), 0.0, 0.0
            if mode == "explore":
                self.yaw_rate[i] = 0.8 * self.yaw_rate[i] + g.normal(0, 1.5)
                keys = (KEY_FORWARD, KEY_SPRINT) if g.random() < 0.25 else (KEY_FORWARD,)
                dx = self.yaw_rate[i] if g.random() < 0.6 else 0.0
            elif mode == "strafe":
                keys = self.keys[i]
            elif mode == "look":
                dx = g.standard_t(3) * 5
                dy = g.normal(0, 2) if g.random() < 0.3 else 0.0
            elif mode == "turn":
                dx = self.yaw_rate[i]
            elif mode == "random":
                keys = self.keys[i]
                dx = g.normal(0, 6) if g.random() < 0.5 else 0.0
            extra = [k for k, p in ((KEY_JUMP, 0.02), (KEY_USE, 0.02), (KEY_CROUCH, 0.01)) if g.random() < p]
            for k in (*keys, *extra):
                out[i, 2 + k] = 1.0
            out[i, 0] = float(np.clip(np.round(dx), -MOUSE_CAP, MOUSE_CAP))
            out[i, 1] = float(np.clip(np.round(dy), -MOUSE_CAP, MOUSE_CAP))
        return out


def render_episodes(cfg: DataConfig, batch: int = 48):
    """Render ``cfg.episodes`` episodes of ``cfg.frames`` frames (themes cycle so all 8 are even)."""
    from .data import Episodes

    frames = torch.zeros(cfg.episodes, cfg.frames, cfg.image_size, cfg.image_size, 3, dtype=torch.uint8)
    ctrl = torch.zeros(cfg.episodes, cfg.frames, CTRL_DIM, dtype=torch.float16)
    caption_ids = torch.zeros(cfg.episodes, cfg.frames, dtype=torch.int32)
    theme = torch.zeros(cfg.episodes, cfg.frames, dtype=torch.long)
    captions: dict[str, int] = {}
    for lo in range(0, cfg.episodes, batch):
        idx = list(range(lo, min(lo + batch, cfg.episodes)))
        seeds = [cfg.seed * 1_000_003 + i for i in idx]
        specs = [EpisodeSpec.from_seed(s, n_frames=cfg.frames, theme=THEME_NAMES[i % len(THEME_NAMES)])
                 for s, i in zip(seeds, idx)]
        world, policy = WorldBatch(specs, cfg.image_size), Policy(seeds)
        for t in range(cfg.frames):
            c = policy.step()
            frames[idx, t] = world.step(c).rgb
            ctrl[idx, t] = c.half()
            theme[idx, t] = world.theme_index()
            caption_ids[idx, t] = torch.tensor([captions.setdefault(c, len(captions)) for c in world.captions()],
                                               dtype=torch.int32)
        print(f"rendered {idx[-1] + 1}/{cfg.episodes} episodes", flush=True)
    return Episodes(frames, ctrl, caption_ids, theme, list(captions))
