"""The shipped model: loads with ``WorldEngine()``, stays within its size budget, and its frames
respond to the controls and the prompt."""

from __future__ import annotations

import pytest
import torch
import yaml

from world_engine import VK, CtrlInput, WorldEngine
from world_engine.engine import EMBEDDED_MODEL
from world_engine.model.text_encoder import HashedTextEncoder
from world_engine.model.tiny_autoencoder import TinyAutoencoder
from simulator.world import World

MAX_BYTES = 25 * 10**6


@pytest.fixture(scope="module")
def engine() -> WorldEngine:
    if not (EMBEDDED_MODEL / "config.yaml").is_file():
        pytest.fail(f"the embedded model is missing from {EMBEDDED_MODEL}")
    return WorldEngine(device="cpu", seed=0)


def test_folder_layout_and_size():
    cfg = yaml.safe_load((EMBEDDED_MODEL / "config.yaml").read_text())
    assert cfg["ae_uri"] == "./autoencoder" and cfg["prompt_encoder_uri"] == "./text_encoder"
    assert cfg["n_buttons"] == 256 and cfg["tokens_per_frame"] == cfg["height"] * cfg["width"]
    size = sum(f.stat().st_size for f in EMBEDDED_MODEL.rglob("*") if f.is_file())
    assert size <= MAX_BYTES, f"embedded model is {size} bytes"


def test_loads_with_its_own_autoencoder_and_text_encoder(engine):
    assert isinstance(engine.autoencoder, TinyAutoencoder)
    assert isinstance(engine.prompt_encoder, HashedTextEncoder)


def rollout(engine: WorldEngine, ctrl: CtrlInput, frames: int = 6) -> torch.Tensor:
    """Seed the history with simulator frames, then play ``ctrl`` (same noise for every call)."""
    world = World.from_seed(3, theme="brick_castle")
    session = engine.fork(seed=1)
    session.set_prompt(world.caption)
    for _ in range(4):
        session.append_frame(world.step().rgb)
    return torch.stack([session.gen_frame(ctrl) for _ in range(frames)]).float()


def test_frames_are_images_that_change_with_controls(engine):
    forward = rollout(engine, CtrlInput(button={VK["W"]}))
    turn = rollout(engine, CtrlInput(mouse=(16.0, 0.0)))
    again = rollout(engine, CtrlInput(button={VK["W"]}))
    assert forward.shape == (6, 64, 64, 3)
    assert forward.std() > 5, "frames are flat"
    assert torch.equal(forward, again), "same seed and controls must give the same frames"
    assert (forward - turn).abs().mean() > 1.0, "controls have no visible effect"


def test_prompt_changes_the_picture(engine):
    def first_frames(prompt: str) -> torch.Tensor:
        session = engine.fork(seed=2)
        session.set_prompt(prompt)
        return torch.stack([session.gen_frame() for _ in range(4)]).float()

    lava, ice = first_frames("a volcanic lava temple"), first_frames("a frozen ice cave")
    assert (lava.mean(dim=(0, 1, 2)) - ice.mean(dim=(0, 1, 2))).abs().max() > 5


def test_sessions_share_one_prompt_encoder(engine):
    """Forks load nothing again: the text encoder is loaded once and shared."""
    first, second = engine.fork(seed=1), engine.fork(seed=2)
    second.set_prompt("an icy cave")
    assert first.prompt_encoder is second.prompt_encoder is engine.prompt_encoder
