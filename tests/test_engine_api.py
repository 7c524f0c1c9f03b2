"""The public WorldEngine API: frames, controls, seeds, sessions and clear errors on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from world_engine import VK, ControlConvention, CtrlInput, InteractiveWorld, WorldEngine, WorldSource


@pytest.fixture(scope="module")
def engine(latent_checkpoint) -> WorldEngine:
    return WorldEngine(latent_checkpoint, device="cpu", seed=0)


@pytest.fixture(scope="module")
def image_engine(tiny_checkpoint) -> WorldEngine:
    return WorldEngine(tiny_checkpoint, device="cpu", seed=0)


def rollout(engine: WorldEngine, ctrls: list[CtrlInput]) -> list[torch.Tensor]:
    return [engine.gen_frame(c, return_img=False) for c in ctrls]


def test_same_seed_same_frames(engine):
    walk = [CtrlInput(button={VK["W"]}, mouse=(0.5, 0.0))] * 3
    engine.reset(seed=7)
    first = rollout(engine, walk)
    engine.reset(seed=7)
    second = rollout(engine, walk)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    engine.reset(seed=8)
    assert not torch.equal(rollout(engine, walk)[0], first[0])


def test_controls_change_the_frame(engine):
    noise = torch.randn(engine.config.latent_shape)
    engine.reset()
    idle = engine.gen_frame(CtrlInput(), return_img=False, noise=noise)
    engine.reset()
    turning = engine.gen_frame(CtrlInput(mouse=(3.0, 0.0)), return_img=False, noise=noise)
    assert not torch.allclose(idle, turning)


def test_history_changes_the_next_frame(engine):
    noise = torch.randn(engine.config.latent_shape)
    engine.reset()
    fresh = engine.gen_frame(noise=noise, return_img=False)
    engine.reset()
    engine.append_latent(torch.randn(engine.config.latent_shape))
    after_history = engine.gen_frame(noise=noise, return_img=False)
    assert not torch.allclose(fresh, after_history)


def test_reset_forgets_history(engine):
    noise = torch.randn(engine.config.latent_shape)
    engine.reset()
    first = engine.gen_frame(noise=noise, return_img=False)
    engine.gen_frame(return_img=False)
    engine.reset()
    assert engine.frame_index == 0
    assert torch.equal(engine.gen_frame(noise=noise, return_img=False), first)


def test_long_sessions_have_no_frame_limit(engine):
    engine.reset()
    engine.frame_index = 100_000
    frame = engine.gen_frame(return_img=False)
    assert torch.isfinite(frame).all() and engine.frame_index == 100_001


def test_forked_sessions_are_isolated(engine):
    a, b = engine.fork(seed=1), engine.fork(seed=1)
    a.append_latent(torch.randn(engine.config.latent_shape))
    noise = torch.randn(engine.config.latent_shape)
    assert b.frame_index == 0
    assert not torch.allclose(a.gen_frame(noise=noise, return_img=False), b.gen_frame(noise=noise, return_img=False))
    assert a.model is b.model  # weights are shared


def test_images_in_and_out(image_engine):
    image_engine.reset()
    image_engine.append_frame(np.full((90, 160, 3), 128, np.uint8))
    image_engine.append_frame(torch.zeros((33, 17, 3), dtype=torch.uint8))
    frame = image_engine.gen_frame(CtrlInput(button={VK["W"]}))
    assert frame.dtype == torch.uint8 and frame.dim() == 3 and frame.shape[-1] == 3


def test_latent_only_engine_refuses_images(engine):
    with pytest.raises(ValueError, match="no autoencoder"):
        engine.gen_frame()
    with pytest.raises(ValueError, match="no autoencoder"):
        engine.append_frame(np.zeros((8, 8, 3), np.uint8))


def test_prompt_on_unconditioned_model_raises(engine):
    with pytest.raises(RuntimeError, match="no prompt conditioning"):
        engine.set_prompt("a castle")


@pytest.mark.parametrize("ctrl, message", [
    (CtrlInput(button={999}), "unknown button id 999"),
    (CtrlInput(button={-1}), "unknown button id -1"),
    (CtrlInput(mouse=(math.nan, 0.0)), "finite"),
    (CtrlInput(mouse=(0.0, math.inf)), "finite"),
    (CtrlInput(mouse=(1.0,)), "pair"),
    (CtrlInput(scroll_wheel=0.5), "scroll_wheel"),
    ("W", "CtrlInput"),
])
def test_bad_controls_raise_value_error(engine, ctrl, message):
    with pytest.raises(ValueError, match=message):
        engine.gen_frame(ctrl, return_img=False)


@pytest.mark.parametrize("img, message", [
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((8, 8, 4), np.uint8), r"\[H, W, 3\]"),
    ([[0, 0, 0]], "numpy array or torch tensor"),
])
def test_bad_images_raise_value_error(image_engine, img, message):
    before = image_engine.frame_index
    with pytest.raises(ValueError, match=message):
        image_engine.append_frame(img)
    assert image_engine.frame_index == before


@pytest.mark.parametrize("latent, message", [
    (torch.zeros(3, 3, 3), "shape"),
    (torch.full((4, 64, 64), math.nan), "finite"),
    (torch.zeros((4, 64, 64), dtype=torch.long), "floating"),
])
def test_bad_latents_raise_value_error(engine, latent, message):
    with pytest.raises(ValueError, match=message):
        engine.append_latent(latent)


@pytest.fixture(scope="module")
def prompted_engine(fixtures_dir) -> WorldEngine:
    return WorldEngine(fixtures_dir / "waypoint-dit-a", device="cpu", seed=0)


@pytest.mark.parametrize("emb, mask, message", [
    (torch.zeros(1, 5, 32), torch.zeros(1, 5, dtype=torch.bool), r"\[1, S, 64\]"),
    (torch.zeros(5, 64), torch.zeros(1, 5, dtype=torch.bool), r"\[1, S, 64\]"),
    (torch.zeros(1, 5, 64), torch.zeros(1, 5), "bool"),
    (torch.zeros(1, 5, 64), torch.zeros(1, 4, dtype=torch.bool), "shape"),
    (torch.full((1, 5, 64), math.nan), torch.zeros(1, 5, dtype=torch.bool), "NaN"),
])
def test_bad_prompt_embeddings_raise_value_error(prompted_engine, emb, mask, message):
    with pytest.raises(ValueError, match=message):
        prompted_engine.set_prompt_embedding(emb, mask)


@pytest.mark.parametrize("text, message", [(123, "string"), ("x" * 10_000, "limit")])
def test_bad_prompts_raise_value_error(prompted_engine, text, message):
    with pytest.raises(ValueError, match=message):
        prompted_engine.set_prompt(text)


def test_prompt_switch_applies_to_next_frame_without_reset(prompted_engine):
    mask = torch.zeros(1, 5, dtype=torch.bool)
    prompt = torch.randn(1, 5, 64)
    history, noise = torch.randn(2, *prompted_engine.config.latent_shape)
    outputs = []
    for next_prompt in (prompt, -prompt):
        engine = prompted_engine.fork()
        engine.set_prompt_embedding(prompt, mask)
        engine.append_latent(history)
        engine.set_prompt_embedding(next_prompt, mask)
        outputs.append(engine.gen_frame(noise=noise, return_img=False))
    assert not torch.allclose(*outputs)


def test_pad_rows_are_zeroed(prompted_engine):
    """Pads act as zero rows whatever the caller put there, as the reference encoder guarantees."""
    engine = prompted_engine
    emb = torch.randn(1, 6, 64)
    mask = torch.tensor([[False, False, False, True, True, True]])
    garbage = emb.clone()
    garbage[:, 3:] = 5.0
    noise = torch.randn(engine.config.latent_shape)
    engine.reset()
    engine.set_prompt_embedding(emb.masked_fill(mask[..., None], 0), mask)
    clean = engine.gen_frame(noise=noise, return_img=False)
    engine.reset()
    engine.set_prompt_embedding(garbage, mask)
    assert torch.equal(engine.gen_frame(noise=noise, return_img=False), clean)


def test_steps_change_the_schedule_and_zero_restores_the_model_one(engine):
    session = engine.fork()
    session.set_steps(3)
    assert session.config.scheduler_sigmas == [1.0, 0.666667, 0.333333, 0.0] and session.n_steps == 3
    session.set_steps(0)
    assert session.config.scheduler_sigmas == engine.model_sigmas
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="whole number"):
            session.set_steps(bad)


def test_the_control_convention_comes_from_the_model_config(latent_checkpoint, image_engine):
    waypoint_like = WorldEngine(latent_checkpoint, device="cpu")
    assert waypoint_like.convention == ControlConvention(n_buttons=256, mouse_units_per_pixel=1.0, mouse_cap=None,
                                                         prompted=False, takes_images=False)
    trained_on_units = WorldEngine(latent_checkpoint, device="cpu",
                                   overrides={"mouse_units_per_pixel": 0.3, "mouse_cap": 24.0})
    assert (trained_on_units.convention.mouse_units_per_pixel, trained_on_units.convention.mouse_cap) == (0.3, 24.0)
    assert image_engine.convention.takes_images


def test_an_engine_is_a_world_source_and_its_forks_are_interactive_worlds(image_engine):
    session = image_engine.fork(seed=3)
    assert isinstance(image_engine, WorldSource) and isinstance(session, InteractiveWorld)
    frame = session.next_frame(CtrlInput(button={VK["W"]}))
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape[-1] == 3


def test_a_frame_made_on_the_cpu_is_on_the_host_at_once_and_is_the_waited_for_frame(image_engine):
    queued, waited = image_engine.fork(seed=5), image_engine.fork(seed=5)
    for mouse in (0.0, 4.0):
        pending = queued.next_frame_async(CtrlInput(button={VK["W"]}, mouse=(mouse, 0.0)))
        assert not pending.asynchronous     # nothing to overlap: the stream encodes it at once
        np.testing.assert_array_equal(pending.result(), waited.next_frame(CtrlInput(button={VK["W"]},
                                                                                     mouse=(mouse, 0.0))))


def test_a_closed_session_makes_no_more_frames_and_its_siblings_go_on(engine):
    closed, other = engine.fork(), engine.fork()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.gen_frame(return_img=False)
    assert torch.isfinite(other.gen_frame(return_img=False)).all()


def test_a_denoising_step_reads_the_history_and_leaves_it_as_it_is(engine):
    noise = torch.randn(engine.config.latent_shape)
    engine.reset()
    expected = engine.gen_frame(noise=noise, return_img=False)
    engine.reset()
    conditions = engine.frame_conditions(CtrlInput(mouse=(1.0, 0.0)))
    x = torch.randn(1, 1, *engine.config.latent_shape)
    first, again = engine.denoise_step(x, conditions, 0), engine.denoise_step(x, conditions, 0)
    assert torch.equal(first, again) and not torch.equal(first, x) and engine.frame_index == 0
    assert torch.equal(engine.gen_frame(noise=noise, return_img=False), expected)
