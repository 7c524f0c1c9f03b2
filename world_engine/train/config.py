"""Settings of every training stage: dataclasses with defaults, overridable from the command line.

``add_arguments`` turns a dataclass into argparse flags (``--batch-size 8``) so each stage's module
declares its settings once, next to the code that reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import WorldConfig

RUN_DIR = Path("runs/embedded")


@dataclass
class DataConfig:
    """Pre-rendered simulator episodes (frames, controls, captions) used by every stage."""

    out: Path = RUN_DIR / "data"
    episodes: int = 384
    frames: int = 96  # per episode
    image_size: int = 64
    seed: int = 0
    workers: int = 1  # render threads


@dataclass
class AEConfig:
    data: Path = RUN_DIR / "data"
    out: Path = RUN_DIR / "ae"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    decoder_only: bool = False  # fine-tune the decoder of <out>/final; latents stay unchanged
    crop_fraction: float = 0.8  # share of steps on half-size crops
    latent_noise: float = 0.1  # decoder sees z + noise*N(0,1) on half the batch (tolerates generated latents)
    edge_weight: float = 0.5
    log_every: int = 50
    save_every: int = 500
    seed: int = 0
    device: str = "cpu"


@dataclass
class DFConfig:
    data: Path = RUN_DIR / "data"
    ae: Path = RUN_DIR / "ae"
    out: Path = RUN_DIR / "df"
    steps: int = 20000
    minutes: float = 0.0  # stop after this much wall time (0 = no limit); resumable
    batch_size: int = 8
    clip_frames: int = 12  # covers the longest attention window (global: 12 frames)
    lr: float = 5e-4
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.999
    sigma_shift: float = 1.0  # s > 1 moves sigma toward 1 (s*sigma / (1 + (s-1)*sigma)): more weight on
    # high noise, where only the context and the controls tell what comes next
    clean_context_prob: float = 0.5  # per clip: context sigma ~ U[0, 0.1], last 1-4 frames full range
    context_sigma_max: float = 0.1
    ctrl_dropout: float = 0.1
    prompt_dropout: float = 0.1
    theme_loss_weight: float = 0.1  # auxiliary theme head on the text encoder
    log_every: int = 50
    save_every: int = 500
    seed: int = 0
    device: str = "cpu"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 2


def embedded_world_config(d_model: int = 128, n_layers: int = 4, n_heads: int = 2, latent_channels: int = 16,
                          latent_size: int = 4, prompt_dim: int = 128,
                          sigmas: list[float] | None = None) -> WorldConfig:
    """The shipped model's architecture: 16 tokens/frame, an 8-frame local window, and every
    third layer global over 12 frames at dilation 2 (training clips are 12 frames long, so no
    attention distance at play time is unseen in training)."""
    return WorldConfig(
        d_model=d_model, n_heads=n_heads, n_layers=n_layers, mlp_ratio=3, channels=latent_channels,
        height=latent_size, width=latent_size, tokens_per_frame=latent_size * latent_size,
        local_window=8, global_window=12, global_attn_period=3, global_pinned_dilation=2,
        n_buttons=256, ctrl_conditioning_period=1, ctrl_cond_dropout=0.1,
        scheduler_sigmas=sigmas or [1.0, 0.75, 0.5, 0.25, 0.0], noise_conditioning="wan",
        ctrl_conditioning="mlp_fusion", prompt_conditioning="cross_attention", prompt_conditioning_period=2,
        prompt_embedding_dim=prompt_dim, prompt_cond_dropout=0.1, prompt_encoder_uri="./text_encoder",
        ae_uri="./autoencoder")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per dataclass field, typed from its default."""
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind: Any = type(default)
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=default)
        else:
            parser.add_argument(flag, type=kind, default=default)


def from_arguments(cls: type, args: argparse.Namespace) -> Any:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

