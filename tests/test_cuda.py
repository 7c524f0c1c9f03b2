"""CUDA correctness: bf16 parity with the fixtures and compiled-vs-eager agreement."""

from __future__ import annotations

import pytest
import torch

from test_parity import rel_err, run_rollout
from world_engine import WorldEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def test_bf16_cuda_rollout_matches_reference_within_bf16(fixtures_dir):
    folder = fixtures_dir / "waypoint-dit-a"
    engine = WorldEngine(folder, device="cuda", dtype=torch.bfloat16, compile=False)
    errors = [rel_err(ours.cpu(), expected) for ours, expected in run_rollout(engine, folder)]
    assert max(errors) < 0.05


def test_compiled_forward_agrees_with_eager(fixtures_dir):
    folder = fixtures_dir / "waypoint-dit-a"
    eager = run_rollout(WorldEngine(folder, device="cuda", dtype=torch.bfloat16, compile=False), folder)
    compiled = run_rollout(WorldEngine(folder, device="cuda", dtype=torch.bfloat16, compile=True), folder)
    assert max(rel_err(c.cpu(), e.cpu()) for (c, _), (e, _) in zip(compiled, eager)) < 0.02
