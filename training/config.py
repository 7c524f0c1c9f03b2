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

from simulator.constants import MOUSE_CAP, POINTER_UNITS_PER_PIXEL
from world_engine.config import WorldConfig

RUN_DIR = Path("runs/embedded")


@dataclass
class DataConfig:
    """Pre-rendered simulator episodes (frames, controls, captions) used by every stage."""

    out: Path = RUN_DIR / "data"
    episodes: int = 640
    frames: int = 96  # per episode
    image_size: int = 64
    seed: int = 0
    branch_groups: int = 1536  # branched clips (training.data.render_branches), in <out>/branches
    branch_copies: int = 4
    branch_clip_frames: int = 12
    branch_frames: int = 2  # the last frames of a clip, where the copies take different actions


@dataclass
class AEConfig:
    data: Path = RUN_DIR / "data"
    out: Path = RUN_DIR / "ae"
    steps: int = 20000
    minutes: float = 0.0  # stop after this much wall time (0 = no limit); writes <out>/final either way
    batch_size: int = 32
    lr: float = 1e-3
    latent_channels: int = 8
    widths: str = "128,64,32"  # decoder widths from the latent grid up; 3 stages = f8 (8x8 latents at 64 px)
    decoder_only: bool = False  # fine-tune the decoder of <out>/final; latents stay unchanged
    crop_fraction: float = 0.0  # share of steps on half-size crops (they hurt full-frame PSNR)
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
    batch_size: int = 8  # clips per process
    clip_frames: int = 8  # the attention window: every distance used in play is seen in training
    lr: float = 5e-4
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.998
    sigma_shift: float = 3.0  # s > 1 moves sigma toward 1 (s*sigma / (1 + (s-1)*sigma)): more weight on
    # high noise, where only the context and the controls tell what comes next
    context_sigma_max: float = 0.1  # noise on the context copies: robustness to the model's own history
    branch_share: float = 0.5  # share of every batch made of branched clip groups (scored on the branch)
    branch_weight: float = 4.0  # loss weight of a branch frame: the one place where only the action tells
    # what comes next, so the control path learns from it (embedded-model-diagnosis.md §8)
    first_frame_weight: float = 1.0  # loss weight of an episode clip's first frame: generated from no
    # history, only the prompt tells its world (prompt -> theme is decided there)
    ctrl_dropout: float = 0.1
    prompt_dropout: float = 0.1
    theme_loss_weight: float = 0.1  # auxiliary theme head on the text encoder
    bf16: bool = False  # bf16 autocast (CPUs with avx512_bf16, GPUs)
    log_every: int = 50
    save_every: int = 250
    seed: int = 0
    device: str = "cpu"
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 2
    patch: int = 2  # latent cells per token side: an 8x8 f8 latent becomes 16 tokens


def embedded_world_config(d_model: int = 128, n_layers: int = 6, n_heads: int = 2, latent_channels: int = 8,
                          latent_size: int = 8, patch: int = 2, prompt_dim: int = 128,
                          sigmas: list[float] | None = None) -> WorldConfig:
    """The shipped model's architecture: 16 tokens/frame and an 8-frame window in every layer (the
    training clips are 8 frames long, so no attention distance at play time is unseen in training,
    and one visibility mask serves all layers).

    Its control convention: the simulator's mouse units (0.3 per pointer pixel, at most 24 per
    frame) scaled by 1/8 into the range of the 0/1 buttons, fused without the RMS norm so that a
    small turn stays small (``embedded-model-diagnosis.md`` §0.2).
    """
    grid = latent_size // patch
    return WorldConfig(
        d_model=d_model, n_heads=n_heads, n_layers=n_layers, mlp_ratio=3, channels=latent_channels,
        height=grid, width=grid, tokens_per_frame=grid * grid, patch=(patch, patch),
        local_window=8, global_window=8, global_attn_period=n_layers, global_pinned_dilation=1,
        n_buttons=256, ctrl_conditioning_period=1, ctrl_cond_dropout=0.1,
        scheduler_sigmas=sigmas or [1.0, 0.75, 0.5, 0.25, 0.0], noise_conditioning="wan",
        ctrl_conditioning="mlp_fusion", prompt_conditioning="cross_attention", prompt_conditioning_period=2,
        prompt_embedding_dim=prompt_dim, prompt_cond_dropout=0.1, prompt_encoder_uri="./text_encoder",
        ae_uri="./autoencoder", mouse_scale=1 / 8, ctrl_fusion_norm="none",
        mouse_units_per_pixel=POINTER_UNITS_PER_PIXEL, mouse_cap=MOUSE_CAP)


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

