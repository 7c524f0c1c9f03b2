"""Stage 1: the DiT learns to denoise the next frame from a clean history (teacher forcing with
a clean-context copy, as in diffusion forcing's "clean context" mode but scoring every frame), trained
jointly with the hashed text encoder.

Per clip of ``clip_frames`` latent frames (pre-encoded by the stage-0 autoencoder) the DiT sees
``2 * clip_frames`` frames: a *context copy* of every frame, lightly noised (``s ~ U[0,
context_sigma_max]``, so the model tolerates its own imperfect history), and a *noisy copy* at a
logit-normal ``s`` (shifted toward 1). A noisy frame attends to itself and to the context copies of
the frames before it within the attention window, exactly what the engine's KV cache holds when it
generates that frame; context copies attend to each other as the cache pass does. Every noisy frame
is scored (rectified flow: ``x_s = (1 - s) x0 + s eps``, target ``eps - x0``), so one clip teaches
``clip_frames`` next-frame predictions for the price of a ``2 * clip_frames`` sequence. Branched
clips (shared context, different last actions) score only their branch frames.
Also: CFG dropout (the learned null control embedding, the empty prompt: 10% of clips each) and an
auxiliary theme classifier on the prompt embedding. Multi-GPU runs go through ``torchrun`` + DDP.
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

from world_engine.model.dit import WorldDiT
from world_engine.model.text_encoder import HashedTextEncoder, TextEncoderConfig
from simulator.themes import THEME_NAMES
from .checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed
from .config import DFConfig, add_arguments, embedded_world_config, from_arguments
from .data import LatentClips


class DFNet(nn.Module):
    """DiT + text encoder + auxiliary theme head; ``forward`` returns the losses of one batch."""

    def __init__(self, cfg: DFConfig, latent_channels: int, latent_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.world_config = embedded_world_config(cfg.d_model, cfg.n_layers, cfg.n_heads, latent_channels,
                                                  latent_size, cfg.patch)
        self.dit = WorldDiT(self.world_config)
        for block in self.dit.blocks:  # the control path starts neutral instead of as noise to unlearn
            if block.ctrl_mlpfusion is not None:
                nn.init.zeros_(block.ctrl_mlpfusion.mlp.fc2.weight)
        self.text = HashedTextEncoder(TextEncoderConfig(out_dim=self.world_config.prompt_embedding_dim))
        self.theme_head = nn.Linear(self.world_config.prompt_embedding_dim, len(THEME_NAMES))

    def forward(self, x0: torch.Tensor, ctrl: torch.Tensor, timestamps: torch.Tensor, text_ids: torch.Tensor,
                theme: torch.Tensor, scored: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses of one batch; clips with ``scored > 0`` (branched) score only their last frames."""
        cfg, (b, n) = self.cfg, x0.shape[:2]
        dev = x0.device
        # 1. noise levels: a lightly noised context copy and a noisy copy of every frame
        sigma = torch.sigmoid(torch.randn(b, n, device=dev))
        sigma = cfg.sigma_shift * sigma / (1 + (cfg.sigma_shift - 1) * sigma)
        sigma_ctx = torch.rand(b, n, device=dev) * cfg.context_sigma_max
        eps = torch.randn(2, *x0.shape, device=dev)
        noised = [(1 - s[..., None, None, None]) * x0 + s[..., None, None, None] * e
                  for s, e in ((sigma_ctx, eps[0]), (sigma, eps[1]))]
        # 2. conditioning, with CFG dropout
        emb, _ = self.text.encode_ids(text_ids)
        theme_loss = F.cross_entropy(self.theme_head(emb.mean(dim=1)), theme)
        keep_prompt = (torch.rand(b, device=dev) >= cfg.prompt_dropout).to(emb.dtype)
        emb = emb * keep_prompt[:, None, None]
        control = self.dit.control_context(torch.cat((ctrl, ctrl), dim=1),
                                           dropped=torch.rand(b, device=dev) < cfg.ctrl_dropout)
        # 3. one pass over [context copies, noisy copies]; score the noisy half
        visible = teacher_forcing_visibility(n, self.world_config.local_window, dev).expand(b, -1, -1)
        v = self.dit(torch.cat(noised, dim=1), torch.cat((sigma_ctx, sigma), dim=1),
                     torch.cat((timestamps, timestamps), dim=1), control, emb, visible=visible)[:, n:]
        per_frame = (v - (eps[1] - x0)).pow(2).mean(dim=(2, 3, 4))
        score = frame_weights(scored, n, cfg.branch_weight, cfg.first_frame_weight)
        flow = (per_frame * score).sum() / score.sum()
        return {"loss": flow + cfg.theme_loss_weight * theme_loss, "flow": flow.detach(),
                "theme": theme_loss.detach()}


def frame_weights(scored: torch.Tensor, n: int, branch_weight: float, first_frame_weight: float) -> torch.Tensor:
    """Loss weight of every noisy frame ``[B, n]``: a branched clip (``scored > 0``) weighs only its
    last ``scored`` frames, by ``branch_weight``; an episode clip weighs every frame 1, except its
    first, which no history precedes (the frame a prompt alone decides), by ``first_frame_weight``."""
    index = torch.arange(n, device=scored.device)[None]
    branch = (index >= (n - scored)[:, None]) * branch_weight
    plain = torch.where(index == 0, first_frame_weight, 1.0).expand(len(scored), -1)
    return torch.where((scored > 0)[:, None], branch, plain)


def warmup_scale(run_steps: int, warmup: int) -> float:
    """Linear learning-rate warmup over a run's first ``warmup`` steps (0: the full rate at once)."""
    return min(1.0, (run_steps + 1) / warmup) if warmup > 0 else 1.0


def teacher_forcing_visibility(n: int, window: int, device: torch.device) -> torch.Tensor:
    """Frame visibility ``[1, 2n, 2n]`` over ``[context copies, noisy copies]`` of ``n`` frames.

    Context copy ``i`` sees context copies ``j <= i`` within the window (a cache pass); noisy copy
    ``i`` sees context copies ``j < i`` within the window and itself (generating frame ``i``).
    """
    i, j = torch.arange(n, device=device)[:, None], torch.arange(n, device=device)[None]
    near = i - j < window
    cache_pass = (j <= i) & near
    generate = (j < i) & near
    top = torch.cat((cache_pass, torch.zeros(n, n, dtype=torch.bool, device=device)), dim=1)
    bottom = torch.cat((generate, torch.eye(n, dtype=torch.bool, device=device)), dim=1)
    return torch.cat((top, bottom))[None]


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
    data = LatentClips(cfg.data, cfg.ae, cfg.clip_frames, device, cfg.branch_share)
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
        lr = cfg.lr * warmup_scale(run_steps, cfg.warmup) * (0.55 + 0.45 * math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
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
    parser = argparse.ArgumentParser(prog="python -m training df", description=__doc__)
    add_arguments(parser, DFConfig)
    cfg = from_arguments(DFConfig, parser.parse_args(argv))
    cfg.out.mkdir(parents=True, exist_ok=True)
    train(cfg)
