"""Stage 0: train the tiny autoencoder on simulator frames.

Most steps train on half-size crops (4x cheaper; the nets are convolutional), the last ones on
full frames. Loss: L1 + edge L1 (finite differences, keeps walls and texture edges sharp) on the
reconstruction; on half of each batch the decoder sees noised latents so that it tolerates the
imperfect latents the DiT generates. At the end the per-channel latent statistics are measured
and stored, and the folder that the engine loads is written to ``<out>/final``.

``--decoder-only`` continues from ``<out>/final`` with the encoder frozen: the latents (and so a DiT
trained on them) stay valid while the decoder keeps improving (recipe stage 4).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from world_engine.model.tiny_autoencoder import TinyAEConfig, TinyAutoencoder
from .checkpoint import load_checkpoint, save_checkpoint
from .config import AEConfig, add_arguments, from_arguments
from .data import load_episodes


def edge_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(x), dx(y)) + F.l1_loss(dy(x), dy(y))


def random_crop(x: torch.Tensor, size: int, align: int) -> torch.Tensor:
    """One random ``size`` crop per batch, its corner on the latent grid."""
    oy, ox = (align * int(torch.randint((x.shape[-1] - size) // align + 1, ())) for _ in range(2))
    return x[..., oy:oy + size, ox:ox + size]


@torch.no_grad()
def measure_latent_stats(model: TinyAutoencoder, frames: torch.Tensor, n: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randperm(frames.shape[0])[:n]
    z = torch.cat([model.encoder(model.images_to_input(frames[i])) for i in idx.split(256)])
    return z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3)).clamp_min(1e-3)


def train(cfg: AEConfig) -> TinyAutoencoder:
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    frames = load_episodes(cfg.data).frames.flatten(0, 1)  # [F, H, W, 3] uint8
    if cfg.decoder_only:
        model = TinyAutoencoder.from_folder(cfg.out / "final", device).requires_grad_(True).train()
        model.encoder.requires_grad_(False)
    else:
        widths = [int(w) for w in cfg.widths.split(",")]
        model = TinyAutoencoder(TinyAEConfig(image_size=frames.shape[1], latent_channels=cfg.latent_channels,
                                             widths=widths)).to(device)
    ckpt, step = cfg.out / ("decoder_checkpoint" if cfg.decoder_only else "checkpoint"), 0
    if (ckpt / "index.json").is_file():
        tensors, meta = load_checkpoint(ckpt)
        model.load_state_dict(tensors)
        step = meta["step"]
        print(f"resumed from {ckpt} at step {step}")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    t0, losses = time.time(), []
    while step < cfg.steps and not (cfg.minutes > 0 and time.time() - t0 > 60 * cfg.minutes):
        done = step / cfg.steps if cfg.minutes <= 0 else max(step / cfg.steps, (time.time() - t0) / (60 * cfg.minutes))
        lr = cfg.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - min(done, 1.0)))
        for group in opt.param_groups:
            group["lr"] = lr
        x = model.images_to_input(frames[torch.randint(frames.shape[0], (cfg.batch_size,))])
        if step < cfg.crop_fraction * cfg.steps:  # the nets are convolutional: crops cost 4x less
            x = random_crop(x, x.shape[-1] // 2, model.cfg.downsample)
        z = model.encode_batch(x)
        noised = torch.rand(z.shape[0], 1, 1, 1, device=device) < 0.5
        z = z + noised * cfg.latent_noise * z.detach().std() * torch.randn_like(z)
        y = model.decode_batch(z)
        loss = F.l1_loss(y, x) + cfg.edge_weight * edge_loss(y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % cfg.log_every == 0:
            mse = F.mse_loss(y.detach(), x).item() / 4  # images in [-1, 1] -> [0, 1] scale
            print(f"ae step {step} loss {sum(losses) / len(losses):.4f} psnr~{10 * torch.log10(torch.tensor(1 / mse)):.2f}"
                  f" lr {lr:.2e} {step / (time.time() - t0):.2f} it/s", flush=True)
            losses = []
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt, model.state_dict(), {"step": step, "stage": "ae"})
    save_checkpoint(ckpt, model.state_dict(), {"step": step, "stage": "ae"})
    model.eval()
    if not cfg.decoder_only:
        model.set_latent_stats(*measure_latent_stats(model, frames))
    model.save(cfg.out / "final")
    print(f"wrote {cfg.out / 'final'}")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training ae", description=__doc__)
    add_arguments(parser, AEConfig)
    train(from_arguments(AEConfig, parser.parse_args(argv)))
