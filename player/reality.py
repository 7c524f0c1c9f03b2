"""Reality mode: the procedural simulator the embedded model learned from, behind the engine
protocol (``world_engine.protocol``), so players can walk the ground-truth world and compare it
with the model's dream.

This is the only module of the app that touches the simulator, and only once a reality world is
opened: importing the app loads none of it. The simulator's state is its own (pose, map, look), so
it neither needs nor uses history frames and cannot start from a picture; prompts pick the theme
and its modifiers. Its history is a ring of simulator states (a few small tensors per frame), so
it rewinds like a model does.

``DreamBesideReality`` plays a model trained on the simulator next to the simulator itself: the
same controls go to both, the frame is the two side by side, and ``resync`` writes the true frames
into the model's history.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from PIL import Image

from world_engine.controls import CtrlInput
from world_engine.engine import DEFAULT_HISTORY_FRAMES
from world_engine.protocol import ControlConvention, InteractiveWorld, Snapshot

if TYPE_CHECKING:
    from simulator.world import World, WorldState

REALITY = "reality"
BESIDE_REALITY = "+reality"     # a model's picker key plus this: the model beside the simulator
RESYNC_FRAMES = 8       # true frames a re-sync writes (the evaluation primes the model with as many)


@dataclass(frozen=True, eq=False)
class RealitySnapshot:
    """A point of a ``RealityWorld``: the map it was built with, the kept simulator states up to
    that point (each with the prompt and controls of its frame) and the newest prompt's look."""

    seed: int
    build_look: dict[str, Any]          # the look the map was built with (it picks the layout)
    look: dict[str, Any]                # the look of the prompt in force there (a reset rebuilds with it)
    frames: tuple[tuple["WorldState", str | None, CtrlInput | None], ...]
    frame_index: int

    @property
    def prompt(self) -> str | None:
        return self.frames[-1][1] if self.frames else None

    def portable(self) -> "RealitySnapshot":
        """Host tensors already; a restore needs the newest state only."""
        return dataclasses.replace(self, frames=self.frames[-1:])


class RealityWorld:
    """One simulator world as an ``InteractiveWorld``; built on its first prompt or frame."""

    def __init__(self, seed: int, size: int = 64) -> None:
        self.seed, self.size = seed, size
        self.world: World | None = None
        self._look: dict[str, Any] = {}     # the newest prompt's look; a reset rebuilds with it
        self._build_look: dict[str, Any] = {}
        self._prompt: str | None = None
        self._kept: deque = deque(maxlen=DEFAULT_HISTORY_FRAMES)
        self.frame_index = 0                # frames made since the map was built
        self._closed = False

    @property
    def convention(self) -> ControlConvention:
        return _convention()

    def _built(self) -> World:
        if self._closed:
            raise RuntimeError("this world is closed")
        if self.world is None:
            self._build(self.seed, self._look)
            self._kept.clear()
            self._kept.append((self.world.state(), self._prompt, None))   # the spawn, before any frame
            self.frame_index = 0
        return self.world

    def _build(self, seed: int, look: dict[str, Any]) -> None:
        from simulator.world import World

        self.world = World.from_seed(seed, size=self.size, **look)
        self.seed, self._build_look = seed, dict(look)

    def set_prompt(self, text: str) -> None:
        """Re-skin the world as the theme (and time, fog, weather...) the prompt names."""
        self._look = _look_of(text)
        self._prompt = text
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
        world = self._built()
        rgb = world.step(ctrl).rgb
        self._kept.append((world.state(), self._prompt, ctrl))
        self.frame_index += 1
        return rgb

    def view(self) -> np.ndarray:
        """The current view, without stepping (before the first frame: the spawn view)."""
        return self._built().render().rgb

    def recent_frames(self, n: int) -> list[tuple[np.ndarray, CtrlInput | None]]:
        """The newest ``n`` frames (at most ``rewind_limit``) rendered again from their kept states,
        each with the controls that made it: the same pictures ``next_frame`` returned."""
        world = self._built()
        now = world.state()
        out = []
        for state, _, ctrl in list(self._kept)[len(self._kept) - min(n, self.rewind_limit):]:
            world.set_state(state)
            out.append((world.render().rgb, ctrl))
        world.set_state(now)
        return out

    def keep_history(self, frames: int) -> None:
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be a whole number >= 1, got {frames!r}")
        self._kept = deque(self._kept, maxlen=frames)

    @property
    def rewind_limit(self) -> int:
        return max(len(self._kept) - 1, 0)

    def snapshot(self, frames_back: int = 0) -> RealitySnapshot:
        self._built()
        if isinstance(frames_back, bool) or not isinstance(frames_back, int) or \
                not 0 <= frames_back <= self.rewind_limit:
            raise ValueError(f"frames_back must be a whole number from 0 to {self.rewind_limit} "
                             f"(the kept history), got {frames_back!r}")
        frames = tuple(self._kept)[:len(self._kept) - frames_back]
        look = self._look if frames_back == 0 else _look_of(frames[-1][1])   # the prompt in force there
        return RealitySnapshot(self.seed, dict(self._build_look), dict(look), frames,
                               self.frame_index - frames_back)

    def restore(self, snapshot: Snapshot) -> None:
        """Back to ``snapshot``'s state, on its map (rebuilt if this world was built otherwise)."""
        if not isinstance(snapshot, RealitySnapshot):
            raise ValueError(f"expected a RealitySnapshot, got {type(snapshot).__name__}")
        if self._closed:
            raise RuntimeError("this world is closed")
        if self.world is None or (self.seed, self._build_look) != (snapshot.seed, snapshot.build_look):
            self._build(snapshot.seed, snapshot.build_look)
        state, self._prompt, _ = snapshot.frames[-1]
        self.world.set_state(state)
        self._look = dict(snapshot.look)
        self._kept = deque(snapshot.frames, maxlen=self._kept.maxlen)
        self.frame_index = snapshot.frame_index

    def reset(self, seed: int | None = None) -> None:
        """Back to a fresh world of the newest prompt's look; a ``seed`` picks another map."""
        if seed is not None:
            self.seed = seed
        self.world = None

    def close(self) -> None:
        self.world, self._closed = None, True
        self._kept.clear()


def _look_of(prompt: str | None) -> dict[str, Any]:
    """The look ``set_prompt(prompt)`` gives (none before any prompt)."""
    from simulator.captions import match_prompt

    return {} if prompt is None else match_prompt(prompt).to_dict()


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


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when they are equal)."""
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@dataclass(frozen=True, eq=False)
class SplitSnapshot:
    """A point of a ``DreamBesideReality``: one of each of its worlds, taken at the same frame."""

    dream: Snapshot
    reality: RealitySnapshot
    started: bool

    @property
    def prompt(self) -> str | None:
        return self.dream.prompt

    def portable(self) -> "SplitSnapshot":
        return SplitSnapshot(self.dream.portable(), self.reality.portable(), self.started)


class DreamBesideReality:
    """A model trained on the simulator (left half of each frame) beside the simulator (right half).

    Both get exactly the same ``CtrlInput`` every frame. The model starts from the simulator's spawn
    view, written into its history, so the two begin at the same place; ``psnr`` compares the newest
    pair. A start image means nothing here (the simulator cannot start from one).
    """

    def __init__(self, dream: InteractiveWorld, reality: RealityWorld) -> None:
        self.dream, self.reality = dream, reality
        self.psnr: float | None = None
        self._started = False

    @property
    def convention(self) -> ControlConvention:
        return dataclasses.replace(self.dream.convention, takes_images=False)

    def set_prompt(self, text: str) -> None:
        self.dream.set_prompt(text)        # the model refuses first, so a refused text changes neither
        self.reality.set_prompt(text)

    def set_steps(self, steps: int) -> None:
        self.dream.set_steps(steps)

    def append_frame(self, img: np.ndarray, ctrl: CtrlInput | None = None) -> None:
        """The pair starts from the simulator's own view, never from a picture."""

    def next_frame(self, ctrl: CtrlInput | None = None) -> np.ndarray:
        ctrl = ctrl if ctrl is not None else CtrlInput()
        if not self._started:
            self.dream.append_frame(self.reality.view(), CtrlInput())
            self._started = True
        truth = self.reality.next_frame(ctrl)
        dream = self.dream.next_frame(ctrl)
        truth = _sized(truth, dream.shape)
        self.psnr = psnr(dream, truth)
        return np.concatenate([dream, truth], axis=1)

    def resync(self) -> None:
        """Write the simulator's newest true frames (up to ``RESYNC_FRAMES``) into the model's
        history in place of the frames it dreamt for them, with the same controls: the model goes
        on from the true world. Nothing to do before the first frame."""
        n = min(RESYNC_FRAMES, self.dream.rewind_limit, self.reality.rewind_limit)
        if n == 0:
            return
        truths = self.reality.recent_frames(n)
        self.dream.restore(self.dream.snapshot(len(truths)))
        for img, ctrl in truths:
            self.dream.append_frame(img, ctrl)

    def keep_history(self, frames: int) -> None:
        self.dream.keep_history(frames)
        self.reality.keep_history(frames)

    @property
    def rewind_limit(self) -> int:
        return min(self.dream.rewind_limit, self.reality.rewind_limit)

    def snapshot(self, frames_back: int = 0) -> SplitSnapshot:
        if isinstance(frames_back, bool) or not isinstance(frames_back, int) or \
                not 0 <= frames_back <= self.rewind_limit:
            raise ValueError(f"frames_back must be a whole number from 0 to {self.rewind_limit} "
                             f"(the kept history), got {frames_back!r}")
        return SplitSnapshot(self.dream.snapshot(frames_back), self.reality.snapshot(frames_back), self._started)

    def restore(self, snapshot: Snapshot) -> None:
        if not isinstance(snapshot, SplitSnapshot):
            raise ValueError(f"expected a SplitSnapshot, got {type(snapshot).__name__}")
        self.dream.restore(snapshot.dream)
        self.reality.restore(snapshot.reality)
        self._started = snapshot.started

    def reset(self, seed: int | None = None) -> None:
        self.dream.reset(seed)
        self.reality.reset(seed)
        self._started, self.psnr = False, None

    def close(self) -> None:
        self.dream.close()
        self.reality.close()


def _sized(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if img.shape == shape:
        return img
    return np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def beside_reality(dream: InteractiveWorld, seed: int) -> DreamBesideReality:
    """``dream`` played beside a simulator world of the same seed."""
    return DreamBesideReality(dream, RealityWorld(seed))


def learned_from_simulator(folder: Path) -> bool:
    """Whether a model folder's ``config.yaml`` says it was trained on this simulator
    (``trained_on: simulator``, which ``python -m training export`` writes)."""
    try:
        values = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(values, dict) and values.get("trained_on") == "simulator"
