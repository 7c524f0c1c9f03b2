"""CUDA correctness and the fast path's claims that need a GPU (run by bench/gpu_check.sh):
bf16 parity with the fixtures, compiled-vs-eager agreement for each attention form, the AOTInductor
package of the flat step (the ZeroGPU path), no host sync per frame, frames downloaded behind their
kernels, no duplicate weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_parity import rel_err, run_rollout
from world_engine import CtrlInput, VK, WorldEngine
from world_engine.engine import EMBEDDED_MODEL

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def test_bf16_cuda_rollout_matches_reference_within_bf16(fixtures_dir):
    folder = fixtures_dir / "waypoint-dit-a"
    engine = WorldEngine(folder, device="cuda", dtype=torch.bfloat16, compile=False)
    assert engine.model.rope_xy.dtype == torch.float32
    errors = [rel_err(ours.cpu(), expected) for ours, expected in run_rollout(engine, folder)]
    assert max(errors) < 0.05


def test_compiled_forward_agrees_with_eager(fixtures_dir):
    folder = fixtures_dir / "waypoint-dit-a"
    eager = run_rollout(WorldEngine(folder, device="cuda", dtype=torch.bfloat16, compile=False), folder)
    compiled = run_rollout(WorldEngine(folder, device="cuda", dtype=torch.bfloat16, compile=True), folder)
    assert max(rel_err(c.cpu(), e.cpu()) for (c, _), (e, _) in zip(compiled, eager)) < 0.02


def _walk(engine: WorldEngine, frames: int) -> list[torch.Tensor]:
    noise = torch.Generator().manual_seed(0)
    out = []
    for i in range(frames):
        x = torch.randn(engine.config.latent_shape, generator=noise)
        out.append(engine.gen_frame(CtrlInput(button={VK["W"]}, mouse=(float(i % 3), 0.0)), return_img=False,
                                    noise=x).float().cpu())
    return out


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_each_compiled_attention_form_agrees_with_eager_sdpa(latent_checkpoint, attention):
    """64-token frames: FlexAttention runs block-sparse with 64-token blocks, dead slots skipped."""
    eager = WorldEngine(latent_checkpoint, device="cuda", dtype=torch.bfloat16, compile=False, attention="sdpa")
    fast = WorldEngine(latent_checkpoint, device="cuda", dtype=torch.bfloat16, compile=True, attention=attention)
    frames = 12   # wraps the 4-frame local and the 8-frame dilated windows
    assert max(rel_err(a, b) for a, b in zip(_walk(fast, frames), _walk(eager, frames))) < 0.02


def test_aoti_package_of_the_flat_step_plays_like_eager(fixtures_dir, tmp_path):
    """The ZeroGPU path off ZeroGPU: export -> spaces.aoti_compile_and_save -> aoti_load_from_package_dir
    on the engine's step module; the K/V cache stays an input the package writes in place."""
    import spaces

    folder = fixtures_dir / "waypoint-dit-a"
    eager = run_rollout(WorldEngine(folder, device="cuda", dtype=torch.bfloat16, compile=False), folder)
    engine = WorldEngine(folder, device="cuda", dtype=torch.bfloat16, compile=False)
    data = load_file(folder / "rollout.safetensors")
    engine.set_prompt_embedding(data["prompt_emb"], data["prompt_pad_mask"].bool())
    spaces.aoti_compile_and_save(tmp_path / "package", engine.export_step())
    spaces.aoti_load_from_package_dir(engine.step_module, tmp_path / "package")
    engine.reset()
    aoti = run_rollout(engine, folder)
    assert max(rel_err(c.cpu(), e.cpu()) for (c, _), (e, _) in zip(aoti, eager)) < 0.02


@pytest.mark.parametrize("compile", [False, True])
def test_a_frame_never_waits_for_the_device(latent_checkpoint, compile):
    """Controls and noise go up through pinned buffers: no synchronising call in gen_frame."""
    engine = WorldEngine(latent_checkpoint, device="cuda", dtype=torch.bfloat16, compile=compile)
    for _ in range(3):
        engine.gen_frame(CtrlInput(button={VK["W"]}), return_img=False)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            engine.gen_frame(CtrlInput(button={VK["W"]}, mouse=(2.0, 0.0)), return_img=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_frame_downloads_behind_its_kernels_and_matches_the_waited_for_one():
    """next_frame_async queues the copy into pinned memory on a side stream (player.stream encodes
    the frame while the next one runs); the pixels are those of next_frame."""
    queued = WorldEngine(EMBEDDED_MODEL, device="cuda", seed=3)
    waited = WorldEngine(EMBEDDED_MODEL, device="cuda", seed=3)
    for i in range(4):
        walk = CtrlInput(button={VK["W"]}, mouse=(float(i), 0.0))
        pending = queued.next_frame_async(walk)
        assert pending.asynchronous
        following = queued.next_frame_async(walk)    # queued before the first one is read
        np.testing.assert_array_equal(pending.result(), waited.next_frame(walk))
        np.testing.assert_array_equal(following.result(), waited.next_frame(walk))


def test_loading_and_fusing_keep_one_copy_of_the_weights(latent_checkpoint):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    engine = WorldEngine(latent_checkpoint, device="cuda", dtype=torch.bfloat16, compile=False)
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in engine.model.parameters()}
    weights = sum(storages.values()) + sum(b.numel() * b.element_size() for b in engine.model.buffers())
    held = torch.cuda.memory_allocated() - base
    peak = torch.cuda.max_memory_allocated() - base
    assert held < 1.15 * weights + 2**21, (held, weights)
    assert peak < 1.25 * weights + 2**22, (peak, weights)
