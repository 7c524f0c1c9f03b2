"""Parity with outputs the reference implementation produced for the shared fixtures (float32, CPU)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from world_engine import CtrlInput, WorldEngine, load_autoencoder


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run_rollout(engine: WorldEngine, folder, shift: int = 0) -> list[torch.Tensor]:
    """Replay the fixture rollout; returns the generated latents in order."""
    steps = json.loads((folder / "rollout.json").read_text())["steps"]
    data = load_file(folder / "rollout.safetensors")
    engine.set_prompt_embedding(data["prompt_emb"], data["prompt_pad_mask"].bool())
    engine.frame_index = shift
    outputs = []
    for i, step in enumerate(steps):
        assert step["frame_timestamp"] + shift == engine.frame_index
        ctrl = CtrlInput(button=set(step["button"]), mouse=tuple(step["mouse"]), scroll_wheel=step["scroll_wheel"])
        if step["op"] == "append":
            engine.append_latent(data[f"{i}.latent"], ctrl)
        else:
            outputs.append((engine.gen_frame(ctrl, return_img=False, noise=data[f"{i}.noise"]), data[f"{i}.latent"]))
    return outputs


def test_dit_rollout_matches_reference(fixtures_dir):
    folder = fixtures_dir / "waypoint-dit-a"
    engine = WorldEngine(folder, device="cpu", dtype=torch.float32)
    pairs = run_rollout(engine, folder)
    assert len(pairs) > 10
    errors = [rel_err(ours, expected) for ours, expected in pairs]
    print(f"DiT rollout: {len(errors)} generated frames, max relative error {max(errors):.2e}")
    assert max(errors) < 1e-4


def test_shifting_all_timestamps_keeps_outputs(fixtures_dir):
    """RoPE is relative: a rollout starting at frame 100 000 (multiple of every dilation) matches."""
    folder = fixtures_dir / "waypoint-dit-a"
    engine = WorldEngine(folder, device="cpu", dtype=torch.float32)
    pairs = run_rollout(engine, folder, shift=100_000)
    assert max(rel_err(ours, expected) for ours, expected in pairs) < 1e-3


def test_autoencoder_matches_reference(fixtures_dir):
    folder = fixtures_dir / "waypoint-ae-a"
    ae = load_autoencoder(folder, device="cpu", dtype=torch.float32)
    io = load_file(folder / "io.safetensors")
    latent = ae.encode(io["image"])
    assert latent.shape == io["latent"].shape
    assert rel_err(latent, io["latent"]) < 1e-4
    decoded = ae.decode(io["decode_in"])
    assert decoded.dtype == torch.uint8 and decoded.shape == io["decoded"].shape
    assert (decoded.int() - io["decoded"].int()).abs().max().item() <= 1


def test_bfloat16_rollout_stays_close(fixtures_dir):
    """The CPU bfloat16 path runs the same math within bf16 rounding, with float32 position tables;
    casting the tables to bf16 with the weights (what ``model.to(bf16)`` used to do) is no closer."""
    folder = fixtures_dir / "waypoint-dit-a"
    engine = WorldEngine(folder, device="cpu", dtype=torch.bfloat16)
    assert engine.model.rope_xy.dtype == torch.float32
    pairs = run_rollout(engine, folder)
    assert all(ours.dtype == torch.bfloat16 for ours, _ in pairs)
    errors = [rel_err(ours, expected) for ours, expected in pairs]
    cast = WorldEngine(folder, device="cpu", dtype=torch.bfloat16)
    cast.model.rope_xy = cast.model.rope_xy.bfloat16()
    cast.model.rope_t_freqs = cast.model.rope_t_freqs.bfloat16()
    cast_errors = [rel_err(ours, expected) for ours, expected in run_rollout(cast, folder)]
    print(f"bf16 rollout: max relative error {max(errors):.2e} (bf16 tables: {max(cast_errors):.2e})")
    assert max(errors) < 0.1
    assert max(errors) <= max(cast_errors) * 1.05 and sum(errors) <= sum(cast_errors) * 1.05
