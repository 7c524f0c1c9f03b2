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


# The released autoencoder's widths (waypoint-format.md §2.4): 4 stages, latent 32x32 from 512x512.
RELEASED_AE: dict[str, Any] = {"stages": 4, "latent_channels": 16,
                               "encoder": {"ch_0": 64, "ch_max": 256}, "decoder": {"ch_0": 128, "ch_max": 1024}}


def write_random_waypoint_autoencoder(folder: str | Path, stages: int = 3, encoder: dict | None = None,
                                      decoder: dict | None = None, **values: Any) -> Path:
    """A Waypoint-format autoencoder (360x640 images, latent ``512 / 2**stages`` square);
    ``encoder``/``decoder`` override values of one part only (the released widths differ)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for part, cls in (("encoder", Encoder), ("decoder", Decoder)):
        model = {**TINY_AE, **values, **((encoder if part == "encoder" else decoder) or {})}
        conf = {**model, f"{part}_blocks_per_stage": [1] * stages}
        with open(folder / f"{part}_conf.yml", "w", encoding="utf-8") as f:
            yaml.safe_dump({"model": conf}, f)
        net = cls(AEConfig(**model, blocks_per_stage=[1] * stages))
        save_file(weight_normed(net.state_dict()), folder / f"{part}.safetensors")
    return folder


def write_random_checkpoint(folder: str | Path, seed: int = 0, autoencoder: str | None = "waypoint",
                            dtype: torch.dtype = torch.float32, device: str = "cpu", **overrides: Any) -> Path:
    """Write ``config.yaml`` + ``model.safetensors`` (+ ``autoencoder/``) with random weights.

    ``autoencoder``: ``"waypoint"`` (360x640 frames; exercises the released format), ``"released"``
    (the same at the released model's widths), ``"tiny"`` (64x64 frames, fast enough to play on a
    CPU) or ``None`` (a latent-only model). ``dtype``/``device``: how the weights are stored and
    where they are drawn (bf16 on a GPU writes a Waypoint-1-Small-sized file in seconds).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = {**TINY_CONFIG, **({"patch": [1, 1]} if autoencoder == "tiny" else {}), **overrides}
    values.setdefault("ae_uri", "./autoencoder" if autoencoder else None)
    config = WorldConfig.from_dict(values)
    torch.manual_seed(seed)
    with torch.device(device):
        model = WorldDiT(config)
    state = unshared_state_dict(model)
    del model
    save_file({k: v.to("cpu", dtype if v.is_floating_point() else v.dtype) for k, v in state.items()},
              folder / "model.safetensors")
    del state
    config.save(folder / "config.yaml")
    if autoencoder == "waypoint":
        write_random_waypoint_autoencoder(folder / "autoencoder", latent_channels=config.channels)
    elif autoencoder == "released":
        write_random_waypoint_autoencoder(folder / "autoencoder", **RELEASED_AE)
    elif autoencoder == "tiny":
        _, height, _ = config.latent_shape
        widths = [16] * max(1, (64 // height).bit_length() - 2) + [8]
        TinyAutoencoder(TinyAEConfig(image_size=64, latent_channels=config.channels, widths=widths)).save(
            folder / "autoencoder")
    elif autoencoder is not None:
        raise ValueError(f"unknown autoencoder kind {autoencoder!r}: use 'waypoint', 'released', 'tiny' or None")
    return folder


TINY_UMT5_WORDS = ["a", "an", "explorable", "world", "forest", "castle", "desert", "schön", "snowy", "city"]


def write_tiny_umt5(folder: str | Path, dim: int = 64, seed: int = 0) -> Path:
    """A UMT5 encoder folder in the transformers format (``config.json``, weights, a word-level
    ``tokenizer.json``), random and a few kilobytes: a stand-in for ``google/umt5-xl`` that loads
    through the same code path, with no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(TINY_UMT5_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # as T5's
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=len(vocab), d_model=dim, d_kv=16, d_ff=2 * dim, num_layers=1,
                        num_heads=max(1, dim // 16), relative_attention_num_buckets=8, pad_token_id=0,
                        eos_token_id=1, decoder_start_token_id=0)
    UMT5EncoderModel(config).save_pretrained(folder)
    return folder


def write_waypoint_like_checkpoint(folder: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """A small random checkpoint shaped like the released ones: prompt cross-attention over a
    UMT5-format encoder (``./umt5``), a Waypoint-format autoencoder (``./autoencoder``)."""
    values = {"prompt_conditioning": "cross_attention", "prompt_conditioning_period": 1,
              "prompt_embedding_dim": 64, "prompt_encoder_uri": "./umt5", **overrides}
    folder = write_random_checkpoint(folder, seed=seed, **values)
    write_tiny_umt5(folder / "umt5", dim=values["prompt_embedding_dim"], seed=seed)
    return folder
