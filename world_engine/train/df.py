"""Stage 1: diffusion forcing of the DiT, trained jointly with the hashed text encoder.

Per clip of ``clip_frames`` latent frames (pre-encoded by the stage-0 autoencoder):
  * rectified flow, ``x_s = (1 - s) x0 + s eps``, target ``eps - x0``, with an independent
    logit-normal ``s`` per frame (diffusion forcing), optionally shifted toward 1;
  * with probability ``clean_context_prob`` the clip is in "clean context" mode: all frames but the
    last 1-4 get ``s ~ U[0, context_sigma_max]`` and only the last frames are scored, which is
    close to how the engine plays (history always comes from a sigma-0 cache pass);
  * CFG dropout: the control embedding is replaced by the learned null embedding, and the prompt by
    the empty prompt (all-zero rows), each for 10% of clips;
  * an auxiliary theme classifier on the prompt embedding speeds up the text encoder.
Frames attend to each other exactly as in a cached rollout (``frame_visibility`` inside WorldDiT).
Multi-GPU runs go through ``torchrun`` + DDP; a single process needs nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..model.dit import ControlContext, WorldDiT
from ..model.text_encoder import HashedTextEncoder, TextEncoderConfig
from ..sim.themes import THEME_NAMES
from .checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from .config import DFConfig, add_arguments, embedded_world_config, from_arguments
from .data import LatentClips


class DFNet(nn.Module):
    """DiT + text encoder + auxiliary theme head; ``forward`` returns the losses of one batch."""

    def __init__(self, cfg: DFConfig, latent_channels: int, latent_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.world_config = embedded_world_config(cfg.d_model, cfg.n_layers, cfg.n_heads, latent_channels, latent_size)
        self.dit = WorldDiT(self.world_config)
        self.text = HashedTextEncoder(TextEncoderConfig(out_dim=self.world_config.prompt_embedding_dim))
        self.theme_head = nn.Linear(self.world_config.prompt_embedding_dim, len(THEME_NAMES))

    def control(self, ctrl: torch.Tensor, drop: torch.Tensor) -> ControlContext:
        """Control terms with the CFG null embedding in place of dropped clips' controls."""
        u = self.dit.ctrl_emb(ctrl)[:, :, None]
        u = torch.where(drop[:, None, None, None], self.dit.ctrl_cfg.null_emb[:, :, None], u)
        return ControlContext([b.ctrl_mlpfusion.control_term(u) if b.ctrl_mlpfusion is not None else None
                               for b in self.dit.blocks])

    def forward(self, x0: torch.Tensor, ctrl: torch.Tensor, timestamps: torch.Tensor, text_ids: torch.Tensor,
                theme: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, (b, n) = self.cfg, x0.shape[:2]
        dev = x0.device
        sigma = torch.sigmoid(torch.randn(b, n, device=dev))
        sigma = cfg.sigma_shift * sigma / (1 + (cfg.sigma_shift - 1) * sigma)
        score = torch.ones(b, n, device=dev)
        clean = torch.rand(b, device=dev) < cfg.clean_context_prob
        n_last = torch.randint(1, 5, (b,), device=dev)
        is_ctx = clean[:, None] & (torch.arange(n, device=dev)[None] < (n - n_last)[:, None])
        sigma = torch.where(is_ctx, torch.rand(b, n, device=dev) * cfg.context_sigma_max, sigma)
        score = torch.where(is_ctx, torch.zeros_like(score), score)

        eps = torch.randn_like(x0)
        s = sigma[..., None, None, None]
        x_t = (1 - s) * x0 + s * eps

        emb, _ = self.text.encode_ids(text_ids)
        theme_loss = F.cross_entropy(self.theme_head(emb.mean(dim=1)), theme)
        keep_prompt = (torch.rand(b, device=dev) >= cfg.prompt_dropout).to(emb.dtype)
        emb = emb * keep_prompt[:, None, None]
        control = self.control(ctrl, torch.rand(b, device=dev) < cfg.ctrl_dropout)

        v = self.dit(x_t, sigma, timestamps, control, emb)
        per_frame = (v - (eps - x0)).pow(2).mean(dim=(2, 3, 4))
        flow = (per_frame * score).sum() / score.sum()
        return {"loss": flow + cfg.theme_loss_weight * theme_loss, "flow": flow.detach(),
                "theme": theme_loss.detach()}


def ema_update(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            ema[name].lerp_(p.detach(), 1 - decay)


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; under torchrun, one process per GPU joins the process group."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, torch.device(device)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    if backend == "nccl":
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        return rank, dist.get_world_size(), torch.device("cuda", local)
    return rank, dist.get_world_size(), torch.device(device)


def train(cfg: DFConfig) -> DFNet:
    rank, world, device = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed + rank)
    data = LatentClips(cfg.data, cfg.ae, cfg.clip_frames, device)
    net = DFNet(cfg, data.latent_channels, data.latent_size).to(device)
    ema = {k: p.detach().clone() for k, p in net.named_parameters()}
    ckpt, step = cfg.out / "checkpoint", 0
    if (ckpt / "index.json").is_file():
        tensors, meta = load_checkpoint(ckpt)
        net.load_state_dict(unprefixed("net", tensors))
        ema = {k: v.to(device) for k, v in unprefixed("ema", tensors).items()}
        step = meta["step"]
        if rank == 0:
            print(f"resumed from {ckpt} at step {step}", flush=True)
    # prompt_cfg.null_emb is part of the checkpoint format but unused here (prompt dropout feeds the
    # empty prompt), so DDP must expect parameters without gradients.
    model = DistributedDataParallel(net, find_unused_parameters=True) if world > 1 else net

    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    if rank == 0:
        n_params = sum(p.numel() for p in net.dit.parameters())
        print(f"DiT {n_params / 1e6:.2f}M params, text encoder "
              f"{sum(p.numel() for p in net.text.parameters()) / 1e6:.2f}M; {len(data)} episodes", flush=True)
    log = open(cfg.out / "log.jsonl", "a", encoding="utf-8") if rank == 0 else None
    t0, run_steps, acc = time.time(), 0, {"loss": 0.0, "flow": 0.0, "theme": 0.0}
    while step < cfg.steps:
        # warmup restarts with every run (no optimizer state is carried), then cosine to 10%
        lr = cfg.lr * min(1.0, (run_steps + 1) / cfg.warmup) * (0.55 + 0.45 * math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        losses = model(*data.batch(cfg.batch_size))
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, net, cfg.ema if step > cfg.warmup else 0.0)
        step, run_steps = step + 1, run_steps + 1
        for k in acc:
            acc[k] += losses[k].item()
        minutes_up = cfg.minutes > 0 and time.time() - t0 > 60 * cfg.minutes
        if world > 1:  # every rank must stop at the same step
            flag = torch.tensor(float(minutes_up), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            minutes_up = bool(flag.item())
        if rank == 0 and step % cfg.log_every == 0:
            row = {"step": step, **{k: v / cfg.log_every for k, v in acc.items()}, "lr": lr,
                   "steps_per_s": run_steps / (time.time() - t0), "wall_s": time.time() - t0}
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
        if step % cfg.log_every == 0:
            acc = dict.fromkeys(acc, 0.0)
        if rank == 0 and (step % cfg.save_every == 0 or step == cfg.steps or minutes_up):
            save_checkpoint(ckpt, {**prefixed("net", net.state_dict()), **prefixed("ema", ema)},
                            {"stage": "df", "step": step, "config": vars(cfg) | {"out": str(cfg.out)},
                             "world_config": net.world_config.to_dict()})
        if minutes_up:
            break
    if world > 1:
        dist.destroy_process_group()
    return net


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m world_engine.train df", description=__doc__)
    add_arguments(parser, DFConfig)
    cfg = from_arguments(DFConfig, parser.parse_args(argv))
    cfg.out.mkdir(parents=True, exist_ok=True)
    train(cfg)
