"""A quick control-following probe of a stage-1 checkpoint, cheap enough to run during training.

Held-out branch groups (one simulator state, ``copies`` different actions for the next frames; see
``data.render_branches``) are encoded with the autoencoder. From the shared clean context the DiT
predicts the first branch frame from pure noise (sigma = 1, where only the context and the controls
say what comes next; the same noise for every copy) under each copy's control; a decision is right
when the prediction is nearest (MSE in latent space) to the latent of the copy whose action it was
given. Chance is ``1 / copies``. Also printed: how far apart the predictions are relative to the
true branch latents (0 = the controls are ignored, 1 = as different as the truth), and the cosine
between each prediction's deviation from its group mean and the truth's (> 0: the control moves the
prediction the right way, long before it is strong enough to win the nearest-branch decision).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from world_engine.config import WorldConfig
from world_engine.model.dit import WorldDiT
from world_engine.model.tiny_autoencoder import TinyAutoencoder
from .checkpoint import load_checkpoint, unprefixed
from .config import RUN_DIR
from .data import encode_frames, render_branches


def load_dit(checkpoint: Path, use_ema: bool = True) -> WorldDiT:
    tensors, meta = load_checkpoint(checkpoint)
    dit = WorldDiT(WorldConfig.from_dict(meta["world_config"]))
    dit.load_state_dict(unprefixed("dit", unprefixed("ema" if use_ema else "net", tensors)), strict=False)
    dit.tie_weights()
    return dit.eval()


@torch.no_grad()
def probe(dit: WorldDiT, latents: torch.Tensor, ctrl: torch.Tensor, start: torch.Tensor, copies: int,
          branch_frames: int) -> dict[str, float]:
    """Branch-match accuracy and relative spread of sigma-1 predictions (see the module docstring)."""
    n_ctx = latents.shape[1] - branch_frames
    groups = latents.shape[0] // copies
    x = latents[:, :n_ctx + 1].clone()
    noise = torch.randn(groups, *x.shape[2:])
    x[:, n_ctx] = noise.repeat_interleave(copies, 0)  # one noise per state: only the action differs
    sigma = torch.zeros(x.shape[:2])
    sigma[:, n_ctx] = 1.0
    timestamps = start[:, None] + torch.arange(n_ctx + 1)
    prompt = torch.zeros(x.shape[0], 1, dit.config.prompt_embedding_dim) if dit.config.prompt_conditioning else None
    v = dit(x, sigma, timestamps, ctrl[:, :n_ctx + 1], prompt)[:, n_ctx]
    pred = (x[:, n_ctx] - v).reshape(groups, copies, -1)  # x0 = x_s - s * v at s = 1
    truth = latents[:, n_ctx].reshape(groups, copies, -1)
    dist = torch.cdist(pred, truth)  # [G, copies(pred), copies(truth)]
    right = (dist.argmin(-1) == torch.arange(copies)).float().mean()
    dev_pred, dev_true = pred - pred.mean(1, keepdim=True), truth - truth.mean(1, keepdim=True)
    cosine = torch.nn.functional.cosine_similarity(dev_pred, dev_true, dim=-1)
    return {"branch_match": float(right), "chance": 1 / copies,
            "relative_spread": float(dev_pred.norm(dim=-1).mean() / dev_true.norm(dim=-1).mean()),
            "deviation_cosine": float(cosine.mean()), "share_cosine_positive": float((cosine > 0).float().mean()),
            "decisions": groups * copies}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training probe", description=__doc__)
    parser.add_argument("--df", type=Path, default=RUN_DIR / "df" / "checkpoint")
    parser.add_argument("--ae", type=Path, default=RUN_DIR / "ae" / "final")
    parser.add_argument("--groups", type=int, default=24)
    parser.add_argument("--raw", action="store_true", help="probe the raw weights instead of the EMA")
    args = parser.parse_args(argv)
    copies, clip, branch = 4, 8, 2
    torch.manual_seed(0)
    branches = render_branches(args.groups, copies, clip, branch, 64, seed=7_777, batch=12)
    latents = encode_frames(TinyAutoencoder.from_folder(args.ae), branches.frames).float()
    _, meta = load_checkpoint(args.df)
    result = probe(load_dit(args.df, use_ema=not args.raw), latents, branches.ctrl.float(), branches.start,
                   copies, branch)
    print(json.dumps({"step": meta["step"], **result}))
