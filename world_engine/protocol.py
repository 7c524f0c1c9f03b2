"""The interface a player drives: a source opens worlds, a world turns controls into frames.

``WorldEngine`` implements both sides (a loaded model is a source, and each ``fork`` is a world);
anything else that makes frames from controls, such as a simulator, can stand behind the same
interface. A world states its control convention, so a player maps keys and pointer pixels the way
that world was trained instead of assuming one.

Every world keeps a bounded history of its newest frames (``keep_history``) and can go back into
it: ``snapshot(frames_back)`` is a point to return to and ``restore`` returns there. A player uses
that to rewind and, with ``Snapshot.portable``, to move a world into another process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .controls import CtrlInput


@dataclass(frozen=True)
class ControlConvention:
    """How a world reads its controls and what else it takes."""

    n_buttons: int                  # button ids 0..n_buttons - 1 (Windows virtual-key codes)
    mouse_units_per_pixel: float    # mouse units of the world per pointer pixel
    mouse_cap: float | None         # largest per-frame mouse delta it knows; None: no clamp
    prompted: bool                  # ``set_prompt`` conditions its frames
    takes_images: bool              # ``append_frame`` conditions its frames (a start image counts)


@runtime_checkable
class Snapshot(Protocol):
    """A point of one world, to ``restore`` later; opaque besides these."""

    @property
    def prompt(self) -> str | None:
        """The prompt in force at that point."""

    def portable(self) -> "Snapshot":
        """A copy that pickles into another process (host memory only) and restores there."""


@runtime_checkable
class InteractiveWorld(Protocol):
    """One playable world: controls in, one RGB frame out per call."""

    @property
    def convention(self) -> ControlConvention: ...

    def set_prompt(self, text: str) -> None:
        """Condition the next frames on ``text``; ``ValueError`` for a text it refuses."""

    def set_steps(self, steps: int) -> None:
        """Denoising steps per frame; 0 keeps the world's own schedule."""

    def append_frame(self, img: np.ndarray, ctrl: CtrlInput | None = None) -> object:
        """Write an RGB frame (uint8 ``[H, W, 3]``) into the history, as if it had been generated."""

    def next_frame(self, ctrl: CtrlInput | None = None) -> np.ndarray:
        """The next frame under ``ctrl``: uint8 ``[H, W, 3]`` on the host."""

    def reset(self, seed: int | None = None) -> None:
        """Forget the history; a ``seed`` restarts the world's randomness."""

    def keep_history(self, frames: int) -> None:
        """Keep the newest ``frames`` frames' state (a ring) for ``snapshot``."""

    @property
    def rewind_limit(self) -> int:
        """How many frames back ``snapshot`` can reach now."""

    def snapshot(self, frames_back: int = 0) -> Snapshot:
        """The world now, or ``frames_back`` frames ago (0..``rewind_limit``; else ``ValueError``)."""

    def restore(self, snapshot: Snapshot) -> None:
        """Return to ``snapshot`` (taken of this world or of one forked with the same seed): the same
        controls then give the same frames. ``ValueError`` for a snapshot of another kind of world."""

    def close(self) -> None:
        """Free what the world holds; a closed world makes no more frames."""


@runtime_checkable
class WorldSource(Protocol):
    """Opens worlds that share its loaded state (weights, textures)."""

    @property
    def device(self) -> torch.device:
        """Where its worlds compute their frames."""

    def fork(self, seed: int | None = None) -> InteractiveWorld:
        """A fresh world; the same seed gives the same world under the same controls."""
