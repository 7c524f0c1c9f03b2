"""Classifier-free guidance on the controls (``ctrl_guidance``): a guided session is two sessions in
lockstep on one latent history, the second under the learned null control on every frame, and
each denoising step moves along ``null + g * (cond - null)``."""

from __future__ import annotations

import pytest
import torch

from world_engine import WorldConfig
from world_engine.controls import VK, CtrlInput
from world_engine.engine import WorldEngine

TURN = CtrlInput(mouse=(8.0, 0.0))


def null_controlled(engine: WorldEngine) -> WorldEngine:
    """An unguided session whose every pass sees the null control instead of its controls."""
    conditions = engine.frame_conditions
    engine.frame_conditions = lambda ctrl=None: conditions(ctrl)._replace(control=engine.model.null_control_terms())
    return engine


@torch.inference_mode()
def lockstep_frame(cond: WorldEngine, null: WorldEngine, noise: torch.Tensor, ctrl: CtrlInput,
                   guidance: float) -> torch.Tensor:
    """The guided frame built by hand from two unguided sessions: same noise, same latent history."""
    a, b = cond.frame_conditions(ctrl), null.frame_conditions(ctrl)
    x = noise.view(1, 1, *noise.shape)
    for step in range(cond.n_steps):
        v_cond = cond._step(*cond.step_inputs(x, a, step, write=False))
        v_null = null._step(*null.step_inputs(x, b, step, write=False))
        x = x + cond._steps[step][2] * (v_null + guidance * (v_cond - v_null))
    for engine, conditions in ((cond, a), (null, b)):
        engine._cache_pass(x, conditions)
    return x[0, 0]


def test_a_guided_session_is_a_conditioned_and_a_null_session_in_lockstep(one_thread):
    guided = WorldEngine(None, device="cpu", seed=0, overrides={"ctrl_guidance": 2.5})
    cond = WorldEngine(None, device="cpu", seed=0)
    null = null_controlled(cond.fork(seed=0))
    generator = torch.Generator().manual_seed(1)
    for ctrl in (TURN, CtrlInput(button={VK["W"]}), TURN):
        noise = torch.randn(guided.config.latent_shape, generator=generator)
        want = lockstep_frame(cond, null, noise, ctrl, 2.5)
        got = guided.gen_frame(ctrl, return_img=False, noise=noise)
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_guidance_moves_the_frame_further_along_the_controls(one_thread):
    """On the shipped model, guidance widens the gap between turning right and turning left."""
    def gap(guidance: float) -> float:
        engine = WorldEngine(None, device="cpu", seed=0, overrides={"ctrl_guidance": guidance})
        frames = []
        for dx in (8.0, -8.0):
            engine.reset(seed=3)
            for _ in range(4):
                engine.gen_frame(CtrlInput(), return_img=False)
            frames.append(engine.gen_frame(CtrlInput(mouse=(dx, 0.0)), return_img=False))
        return (frames[0] - frames[1]).pow(2).mean().item()

    assert gap(2.0) > 1.5 * gap(1.0)


def test_a_guided_session_restores_exactly(one_thread):
    engine = WorldEngine(None, device="cpu", seed=4, overrides={"ctrl_guidance": 2.0})
    for _ in range(3):
        engine.gen_frame(TURN, return_img=False)
    snap = engine.snapshot()
    after = [engine.gen_frame(TURN, return_img=False) for _ in range(2)]
    engine.restore(snap)
    assert all(torch.equal(a, engine.gen_frame(TURN, return_img=False)) for a in after)


@pytest.mark.parametrize("value", [0, -1, 21, "2", True, float("nan")])
def test_control_guidance_must_be_a_number_in_range(value):
    from bench.random_checkpoint import TINY_CONFIG

    with pytest.raises(ValueError, match="ctrl_guidance must be a number"):
        WorldConfig.from_dict({**TINY_CONFIG, "ctrl_guidance": value})


def test_guidance_needs_a_null_control():
    from bench.random_checkpoint import TINY_CONFIG

    with pytest.raises(ValueError, match="needs control conditioning"):
        WorldConfig.from_dict({**TINY_CONFIG, "ctrl_conditioning": None, "ctrl_guidance": 2.0})
