"""Build networks from checkpoint folders: the DiT (strict) and autoencoders by file format."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..config import WorldConfig
from .autoencoder import WaypointAutoencoder
from .dit import WorldDiT
from .weights import load_strict


def load_dit(folder: Path, config: WorldConfig, device: torch.device, dtype: torch.dtype) -> WorldDiT:
    """Build the DiT for ``config`` and load ``model.safetensors`` strictly into it.

    Weights are built without random init (meta device) and the noise conditioner stays float32.
    """
    path = folder / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no model.safetensors")
    with torch.device("meta"):
        model = WorldDiT(config)
    model.to_empty(device=device)
    model.tie_weights()
    model.reset_buffers()
    load_strict(model, load_file(path, device=str(device)), path)
    model.to(dtype)
    model.denoise_step_emb.float()
    return model.eval().requires_grad_(False)


def load_autoencoder_folder(folder: Path, device: torch.device, dtype: torch.dtype):
    """An autoencoder with ``encode(img) -> latent`` and ``decode(latent) -> uint8 image``."""
    if (folder / "encoder_conf.yml").is_file():
        return WaypointAutoencoder.from_folder(folder, device, dtype)
    if (folder / "tiny_autoencoder.yaml").is_file():
        from .tiny_autoencoder import TinyAutoencoder

        return TinyAutoencoder.from_folder(folder, device=device, dtype=dtype)
    raise FileNotFoundError(f"{folder}: no autoencoder found (expected encoder_conf.yml or tiny_autoencoder.yaml)")
