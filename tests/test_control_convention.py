"""The model-owned control convention: mouse scaling and a control fusion that keeps magnitude."""

from __future__ import annotations

import pytest
import torch

from bench.random_checkpoint import TINY_CONFIG
from world_engine import WorldConfig, WorldDiT


def fused_terms(values: dict, ctrl: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    dit = WorldDiT(WorldConfig.from_dict({**TINY_CONFIG, **values}))
    with torch.no_grad():
        return dit.control_context(ctrl).terms[0]


def turn(dx: float) -> torch.Tensor:
    ctrl = torch.zeros(1, 1, 259)
    ctrl[..., 0] = dx
    return ctrl


def test_rms_fusion_makes_a_jitter_as_strong_as_a_turn():
    small, large = (fused_terms({}, turn(dx)).flatten() for dx in (0.3, 8.0))
    assert small.norm() > 0.5 * large.norm()  # Waypoint's convention: only the direction survives


def test_fusion_without_norm_keeps_a_small_turn_small():
    small, large = (fused_terms({"ctrl_fusion_norm": "none"}, turn(dx)) for dx in (0.3, 8.0))
    assert small.norm() < 0.2 * large.norm()
    assert fused_terms({"ctrl_fusion_norm": "none"}, turn(0.0)).abs().max() == 0  # no input, no term


@pytest.mark.parametrize("norm", ["rms", "none"])
def test_mouse_scale_is_applied_before_the_control_embedding(norm):
    scaled = fused_terms({"ctrl_fusion_norm": norm, "mouse_scale": 0.125}, turn(8.0))
    raw = fused_terms({"ctrl_fusion_norm": norm}, turn(1.0))
    assert torch.allclose(scaled, raw, atol=1e-6)


def test_dropped_clips_get_the_null_embedding():
    torch.manual_seed(0)
    dit = WorldDiT(WorldConfig.from_dict(TINY_CONFIG))
    torch.nn.init.normal_(dit.ctrl_cfg.null_emb)
    ctrl = torch.cat((turn(8.0), turn(-8.0)))
    with torch.no_grad():
        kept = dit.control_context(ctrl).terms[0]
        dropped = dit.control_context(ctrl, dropped=torch.tensor([False, True])).terms[0]
        null = dit.blocks[0].ctrl_mlpfusion.control_term(dit.ctrl_cfg.null_emb[:, :, None])
    assert torch.equal(dropped[0], kept[0]) and torch.allclose(dropped[1], null[0], atol=1e-6), (dropped[1] - null[0]).abs().max()
