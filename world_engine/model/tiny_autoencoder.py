"""The embedded model's tiny convolutional autoencoder: 64x64 RGB <-> a 4x4 latent grid (f16).

Files in its folder: ``tiny_autoencoder.yaml`` (the :class:`TinyAEConfig` fields, including the
per-channel latent normalisation) and ``tiny_autoencoder.safetensors`` (encoder and decoder).
The decoder is a pixel-shuffle stack with tapered channels so that decoding one frame costs a few
milliseconds on 2 CPU cores (``tiny-world-model-recipe.md`` §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import to_image_tensor
from .weights import dataclass_from_yaml, load_small_model, save_small_model

CONFIG_NAME = "tiny_autoencoder.yaml"
WEIGHTS_NAME = "tiny_autoencoder.safetensors"


@dataclass
class TinyAEConfig:
    """Shape of the autoencoder; ``widths`` run from the latent grid up to half resolution."""

    image_size: int = 64
    latent_channels: int = 16
    widths: list[int] = field(default_factory=lambda: [96, 96, 64, 32])
    latent_mean: list[float] | None = None  # per-channel statistics of raw encoder outputs
    latent_std: list[float] | None = None

    @property
    def downsample(self) -> int:
        return 2 ** len(self.widths)  # one x2 per stage change, plus the outer space-to-depth

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample

    def validate(self) -> None:
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} is not a multiple of {self.downsample}")
        for name in ("latent_mean", "latent_std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.latent_channels:
                raise ValueError(f"{name} needs {self.latent_channels} values, got {len(values)}")

    @classmethod
    def from_yaml(cls, path: Path) -> "TinyAEConfig":
        cfg = dataclass_from_yaml(cls, path)
        cfg.validate()
        return cfg


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class TinyEncoder(nn.Module):
    """Space-to-depth by 2, then strided convs down to the latent grid (cheap on CPU: no conv runs
    at full resolution)."""

    def __init__(self, cfg: TinyAEConfig) -> None:
        super().__init__()
        widths = cfg.widths[::-1]
        self.conv_in = nn.Conv2d(12, widths[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.mid = ResBlock(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(F.pixel_unshuffle(x, 2))
        for down in self.down:
            x = down(F.relu(x))
        return self.conv_out(F.relu(self.mid(x)))


class TinyDecoder(nn.Module):
    """Latent -> res block -> per stage (conv to 4c', pixel shuffle x2, refine conv) -> RGB at half
    resolution as 12 channels -> pixel shuffle x2."""

    def __init__(self, cfg: TinyAEConfig) -> None:
        super().__init__()
        w = cfg.widths
        self.conv_in = nn.Conv2d(cfg.latent_channels, w[0], 3, padding=1)
        self.mid = ResBlock(w[0])
        self.up = nn.ModuleList(nn.Conv2d(a, 4 * b, 3, padding=1) for a, b in zip(w, w[1:]))
        self.refine = nn.ModuleList(nn.Conv2d(b, b, 3, padding=1) for b in w[1:])
        self.conv_out = nn.Conv2d(w[-1], 12, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for up, refine in zip(self.up, self.refine):
            x = F.pixel_shuffle(up(F.relu(x)), 2)
            x = x + refine(F.relu(x))
        return F.pixel_shuffle(self.conv_out(F.relu(x)), 2)


class TinyAutoencoder(nn.Module):
    """Images in ``[-1, 1]`` ``[B, 3, S, S]`` <-> normalised latents ``[B, C, S/16, S/16]``.

    Latents are shifted and scaled per channel to roughly unit variance (as the DiT expects), using
    statistics measured after training and stored in the config.
    """

    def __init__(self, cfg: TinyAEConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = TinyEncoder(cfg)
        self.decoder = TinyDecoder(cfg)
        c = cfg.latent_channels
        mean = torch.tensor(cfg.latent_mean) if cfg.latent_mean is not None else torch.zeros(c)
        std = torch.tensor(cfg.latent_std) if cfg.latent_std is not None else torch.ones(c)
        self.register_buffer("latent_mean", mean.view(1, c, 1, 1), persistent=False)
        self.register_buffer("latent_std", std.view(1, c, 1, 1), persistent=False)

    # Batched tensors (training) -----------------------------------------------------------------
    def encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` in ``[-1, 1]`` -> normalised latents."""
        return (self.encoder(x) - self.latent_mean) / self.latent_std

    def decode_batch(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> ``[B, 3, S, S]`` (unclamped, nominally ``[-1, 1]``)."""
        return self.decoder(z * self.latent_std + self.latent_mean)

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.cfg.latent_mean = [float(v) for v in mean]
        self.cfg.latent_std = [float(v) for v in std]
        self.latent_mean.copy_(mean.view_as(self.latent_mean))
        self.latent_std.copy_(std.view_as(self.latent_std))

    def images_to_input(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` (any size) -> float ``[B, 3, S, S]`` in ``[-1, 1]`` on this device."""
        p = next(self.parameters())
        x = frames.to(p.device).permute(0, 3, 1, 2).to(p.dtype) / 127.5 - 1
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    @staticmethod
    def output_to_images(x: torch.Tensor) -> torch.Tensor:
        """Decoder output ``[B, 3, S, S]`` -> uint8 ``[B, S, S, 3]``."""
        return ((x.float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)

    # The engine's single-frame interface ----------------------------------------------------------
    @torch.inference_mode()
    def encode(self, img: Any) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` (numpy or torch, any size; resized) -> latent ``[C, h, w]``."""
        return self.encode_batch(self.images_to_input(to_image_tensor(img)[None]))[0]

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent ``[C, h, w]`` -> uint8 ``[S, S, 3]``."""
        c, s = self.cfg.latent_channels, self.cfg.latent_size
        if not isinstance(latent, torch.Tensor) or tuple(latent.shape) != (c, s, s):
            got = list(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise ValueError(f"latent must have shape [{c}, {s}, {s}], got {got}")
        p = next(self.parameters())
        return self.output_to_images(self.decode_batch(latent[None].to(p.device, p.dtype)))[0]

    # Files ----------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        save_small_model(self, self.cfg, folder, CONFIG_NAME, WEIGHTS_NAME)

    @classmethod
    def from_folder(cls, folder: str | Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> "TinyAutoencoder":
        folder = Path(folder)
        return load_small_model(cls(TinyAEConfig.from_yaml(folder / CONFIG_NAME)), folder, WEIGHTS_NAME, device, dtype)
