"""The Waypoint image autoencoder (owl-vae format): 360x640 RGB <-> latent frames.

Files: ``encoder_conf.yml`` / ``decoder_conf.yml`` (a ``model:`` mapping) and
``encoder.safetensors`` / ``decoder.safetensors`` holding weight-normalised convolutions. Weight
norm is folded into plain convolution weights at load time (``W = g * v / ||v||``).
The architecture is specified in ``waypoint-format.md`` §2.4 and §3.13.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .weights import load_strict, read_yaml_mapping

ENCODE_SIZE = (512, 512)
DECODE_SIZE = (360, 640)


@dataclass
class AEConfig:
    channels: int
    latent_channels: int
    ch_0: int
    ch_max: int
    blocks_per_stage: list[int]
    skip_logvar: bool = False

    @classmethod
    def from_yaml(cls, path: Path, blocks_key: str) -> "AEConfig":
        model = read_yaml_mapping(path, "model")
        try:
            return cls(channels=int(model["channels"]), latent_channels=int(model["latent_channels"]),
                       ch_0=int(model["ch_0"]), ch_max=int(model["ch_max"]),
                       blocks_per_stage=[int(n) for n in model[blocks_key]],
                       skip_logvar=bool(model.get("skip_logvar", False)))
        except KeyError as exc:
            raise ValueError(f"{path}: missing key {exc.args[0]!r}") from exc


def conv(c_in: int, c_out: int, k: int, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=bias)


class Proj(nn.Module):
    """A named holder for one convolution (the checkpoint's ``<name>.proj``)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.proj = layer


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        hidden = 2 * ch
        self.conv1 = conv(ch, hidden, 1)
        self.conv2 = conv(hidden, hidden, 3, groups=max(1, hidden // 16))
        self.conv3 = conv(hidden, ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.01)), 0.01)
        return x + self.conv3(h)


class Stage(nn.Module):
    """ResBlocks plus a 1x1 resampling projection (``down`` or ``up``); see the encoder/decoder."""

    def __init__(self, res_ch: int, n_blocks: int, **resample: nn.Module) -> None:
        super().__init__()
        for name, module in resample.items():
            self.add_module(name, module)
        self.blocks = nn.ModuleList(ResBlock(res_ch) for _ in range(n_blocks))


def bicubic(x: torch.Tensor, size: tuple[int, int] | None = None, scale: float | None = None) -> torch.Tensor:
    return F.interpolate(x, size=size, scale_factor=scale, mode="bicubic", align_corners=False)


class Encoder(nn.Module):
    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv_in = Proj(conv(cfg.channels, cfg.ch_0, 3))
        stages, residuals = [], []
        ch = cfg.ch_0
        for n_blocks in cfg.blocks_per_stage:
            nxt = min(2 * ch, cfg.ch_max)
            stages.append(Stage(ch, n_blocks, down=Proj(conv(ch, nxt, 1, bias=False))))
            residuals.append(Proj(conv(ch, nxt // 4, 3)))
            ch = nxt
        self.blocks = nn.ModuleList(stages)
        self.residuals = nn.ModuleList(residuals)
        self.conv_out = Proj(conv(ch, cfg.latent_channels, 3))
        if not cfg.skip_logvar:
            self.conv_out_logvar = conv(ch, 1, 3)  # stored in checkpoints, never used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in.proj(bicubic(x, ENCODE_SIZE))
        for stage, residual in zip(self.blocks, self.residuals):
            h = x
            for block in stage.blocks:
                h = block(h)
            x = stage.down.proj(bicubic(h, scale=0.5)) + F.pixel_unshuffle(residual.proj(x), 2)
        groups = x.shape[1] // self.cfg.latent_channels
        avg = x.unflatten(1, (groups, self.cfg.latent_channels)).mean(dim=1) * groups**0.5
        return self.conv_out.proj(x) + avg


class Decoder(nn.Module):
    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv_in = Proj(conv(cfg.latent_channels, cfg.ch_max, 3))
        widths = [cfg.ch_0]
        for _ in cfg.blocks_per_stage:
            widths.append(min(2 * widths[-1], cfg.ch_max))
        n = len(cfg.blocks_per_stage)
        stages, residuals = [], []
        for idx, n_blocks in enumerate(cfg.blocks_per_stage):  # idx 0 = lowest resolution
            c_in, c_out = widths[n - idx], widths[n - 1 - idx]
            up = {} if c_in == c_out else {"up": Proj(conv(c_in, c_out, 1, bias=False))}
            stages.append(Stage(c_out, n_blocks, **up))
            residuals.append(Proj(conv(c_in, 4 * c_out, 3)))
        self.blocks = nn.ModuleList(stages)
        self.residuals = nn.ModuleList(residuals)
        self.conv_out = Proj(conv(cfg.ch_0, cfg.channels, 3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        reps = self.cfg.ch_max // self.cfg.latent_channels
        x = self.conv_in.proj(z) + z.repeat_interleave(reps, dim=1) * reps**-0.5
        for stage, residual in zip(self.blocks, self.residuals):
            h = stage.up.proj(x) if hasattr(stage, "up") else x
            h = bicubic(h, scale=2.0)
            for block in stage.blocks:
                h = block(h)
            x = h + F.pixel_shuffle(residual.proj(x), 2)
        return bicubic(self.conv_out.proj(F.silu(x)), DECODE_SIZE)


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace weight-norm pairs (``parametrizations.weight.original0/1`` or ``weight_g/_v``)
    by the effective ``weight = g * v / ||v||`` (norm per output channel)."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        for g_suffix, v_suffix in ((".parametrizations.weight.original0", ".parametrizations.weight.original1"),
                                   (".weight_g", ".weight_v")):
            if key.endswith(g_suffix):
                pairs.setdefault(key[: -len(g_suffix)], {})["g"] = value
                break
            if key.endswith(v_suffix):
                pairs.setdefault(key[: -len(v_suffix)], {})["v"] = value
                break
        else:
            out[key] = value
    for prefix, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            missing = "magnitude (original0/weight_g)" if "g" not in pair else "direction (original1/weight_v)"
            raise ValueError(f"weight-normalised conv {prefix!r} lacks its {missing} tensor")
        g, v = pair["g"].float(), pair["v"].float()
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
        out[prefix + ".weight"] = g.view(-1, *([1] * (v.dim() - 1))) * v / norm
    return out


def to_image_tensor(img: Any) -> torch.Tensor:
    """Check and convert an RGB image (uint8 ``[H, W, 3]``, numpy or torch) to a tensor."""
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(np.ascontiguousarray(img))
    if not isinstance(img, torch.Tensor):
        raise ValueError(f"image must be a numpy array or torch tensor, got {type(img).__name__}")
    if img.dtype != torch.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype}")
    if img.dim() != 3 or img.shape[-1] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image must have shape [H, W, 3], got {list(img.shape)}")
    return img


class WaypointAutoencoder:
    """``encode(img uint8 [H, W, 3]) -> latent [C, h, w]`` and ``decode(latent) -> uint8 [360, 640, 3]``."""

    def __init__(self, encoder: Encoder, decoder: Decoder, device: torch.device, dtype: torch.dtype) -> None:
        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        self.device, self.dtype = device, dtype
        self.latent_channels = decoder.cfg.latent_channels

    @classmethod
    def from_folder(cls, folder: Path, device: torch.device, dtype: torch.dtype) -> "WaypointAutoencoder":
        enc = Encoder(AEConfig.from_yaml(folder / "encoder_conf.yml", "encoder_blocks_per_stage"))
        dec = Decoder(AEConfig.from_yaml(folder / "decoder_conf.yml", "decoder_blocks_per_stage"))
        for module, name in ((enc, "encoder.safetensors"), (dec, "decoder.safetensors")):
            load_strict(module, fold_weight_norm(load_file(folder / name)), folder / name)
        return cls(enc.to(device, dtype), dec.to(device, dtype), device, dtype)

    @torch.inference_mode()
    def encode(self, img: Any) -> torch.Tensor:
        img = to_image_tensor(img).to(self.device)
        x = img.permute(2, 0, 1)[None].to(self.dtype).div(255).mul(2).sub(1)
        c_in = self.encoder.cfg.channels
        if x.shape[1] < c_in:
            x = torch.cat((x, x.new_zeros(1, c_in - x.shape[1], *x.shape[2:])), dim=1)
        return self.encoder(x[:, :c_in])[0]

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.dim() != 3 or latent.shape[0] != self.latent_channels:
            raise ValueError(f"latent must have shape [{self.latent_channels}, h, w], got {list(latent.shape)}")
        x = self.decoder(latent[None].to(self.device, self.dtype))
        return (x / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)[0, :3].permute(1, 2, 0)
