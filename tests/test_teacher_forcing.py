"""Stage 1's teacher-forcing pass equals generating each frame after a clean history."""

from __future__ import annotations

import torch

from bench.random_checkpoint import TINY_CONFIG
from training.df import teacher_forcing_visibility
from world_engine import WorldConfig, WorldDiT


def test_each_noisy_frame_sees_what_a_rollout_would_have_cached():
    torch.manual_seed(0)
    config = WorldConfig.from_dict({**TINY_CONFIG, "local_window": 3, "global_window": 3,
                                    "global_pinned_dilation": 1})
    dit = WorldDiT(config).eval()
    n = 5
    clean, noisy = torch.randn(2, 1, n, *config.latent_shape)
    sigma_ctx, sigma = torch.rand(1, n) * 0.1, torch.rand(1, n)
    ctrl = torch.randn(1, n, config.ctrl_dim)
    t = torch.arange(10, 10 + n)[None]
    with torch.no_grad():
        together = dit(torch.cat((clean, noisy), 1), torch.cat((sigma_ctx, sigma), 1), torch.cat((t, t), 1),
                       torch.cat((ctrl, ctrl), 1), visible=teacher_forcing_visibility(n, 3, torch.device("cpu")))
        for i in range(n):  # frame i generated after the context copies of frames < i
            x = torch.cat((clean[:, :i], noisy[:, i:i + 1]), 1)
            s = torch.cat((sigma_ctx[:, :i], sigma[:, i:i + 1]), 1)
            c = torch.cat((ctrl[:, :i], ctrl[:, i:i + 1]), 1)
            alone = dit(x, s, t[:, :i + 1], c)[:, -1]
            assert torch.allclose(together[:, n + i], alone, atol=1e-5), i


def test_visibility_mask_layout():
    mask = teacher_forcing_visibility(3, 2, torch.device("cpu"))[0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0, 0],   # context copies: a cache pass over the window
                    [1, 1, 0, 0, 0, 0],
                    [0, 1, 1, 0, 0, 0],
                    [0, 0, 0, 1, 0, 0],   # noisy copies: earlier context in the window, and itself
                    [1, 0, 0, 0, 1, 0],
                    [0, 1, 0, 0, 0, 1]]
