"""Small random-weight checkpoints in the real on-disk formats, for tests and offline development."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from world_engine.config import WorldConfig
from world_engine.model.autoencoder import AEConfig, Decoder, Encoder
from world_engine.model.dit import WorldDiT
from world_engine.model.tiny_autoencoder import TinyAEConfig, TinyAutoencoder
from world_engine.model.weights import unshared_state_dict

TINY_CONFIG: dict[str, Any] = {
    "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2, "mlp_ratio": 2,
    "channels": 4, "height": 8, "width": 8, "patch": [8, 8], "tokens_per_frame": 64,
    "local_window": 4, "global_window": 8, "global_attn_period": 2, "global_pinned_dilation": 2,
    "n_buttons": 256, "ctrl_conditioning": "mlp_fusion", "ctrl_conditioning_period": 1,
    "noise_conditioning": "wan", "prompt_conditioning": None, "value_residual": True, "gated_attn": True,
    "scheduler_sigmas": [1.0, 0.5, 0.0],
}

TINY_AE: dict[str, Any] = {"channels": 3, "latent_channels": 4, "ch_0": 8, "ch_max": 16}


def weight_normed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Store 4-D conv weights as weight-norm pairs (``original0`` = g, ``original1`` = v)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 4:
            prefix = key[: -len(".weight")]
            out[prefix + ".parametrizations.weight.original0"] = value.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            out[prefix + ".parametrizations.weight.original1"] = value.contiguous()
        else:
            out[key] = value.contiguous()
    return out


def write_random_waypoint_autoencoder(folder: str | Path, stages: int = 3, **values: Any) -> Path:
    """A Waypoint-format autoencoder (360x640 images, latent ``512 / 2**stages`` square)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = {**TINY_AE, **values}
    for part, cls in (("encoder", Encoder), ("decoder", Decoder)):
        conf = {**model, f"{part}_blocks_per_stage": [1] * stages}
        with open(folder / f"{part}_conf.yml", "w", encoding="utf-8") as f:
            yaml.safe_dump({"model": conf}, f)
        net = cls(AEConfig(**model, blocks_per_stage=[1] * stages))
        save_file(weight_normed(net.state_dict()), folder / f"{part}.safetensors")
    return folder


def write_random_checkpoint(folder: str | Path, seed: int = 0, autoencoder: str | None = "waypoint",
                            **overrides: Any) -> Path:
    """Write ``config.yaml`` + ``model.safetensors`` (+ ``autoencoder/``) with random weights.

    ``autoencoder``: ``"waypoint"`` (360x640 frames; exercises the released format), ``"tiny"``
    (64x64 frames, fast enough to play on a CPU) or ``None`` (a latent-only model).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = {**TINY_CONFIG, **({"patch": [1, 1]} if autoencoder == "tiny" else {}), **overrides}
    values.setdefault("ae_uri", "./autoencoder" if autoencoder else None)
    config = WorldConfig.from_dict(values)
    torch.manual_seed(seed)
    model = WorldDiT(config)
    save_file(unshared_state_dict(model), folder / "model.safetensors")
    config.save(folder / "config.yaml")
    if autoencoder == "waypoint":
        write_random_waypoint_autoencoder(folder / "autoencoder", latent_channels=config.channels)
    elif autoencoder == "tiny":
        _, height, _ = config.latent_shape
        widths = [16] * max(1, (64 // height).bit_length() - 2) + [8]
        TinyAutoencoder(TinyAEConfig(image_size=64, latent_channels=config.channels, widths=widths)).save(
            folder / "autoencoder")
    elif autoencoder is not None:
        raise ValueError(f"unknown autoencoder kind {autoencoder!r}: use 'waypoint', 'tiny' or None")
    return folder
