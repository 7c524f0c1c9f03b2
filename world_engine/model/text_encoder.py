"""The embedded model's prompt encoder: hashed word uni+bigrams -> small transformer -> query tokens.

It replaces UMT5 for the embedded model (no download, under a megabyte) and keeps its interface:
``encoder(texts) -> (emb [B, S, P], pad_mask [B, S])`` with pad rows exactly zero. Words and word
pairs are hashed (crc32, stable across processes) into a fixed table, so any text is accepted and
no vocabulary file is needed. Files: ``text_encoder.yaml`` and ``text_encoder.safetensors``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .weights import dataclass_from_yaml, load_small_model, save_small_model

CONFIG_NAME = "text_encoder.yaml"
WEIGHTS_NAME = "text_encoder.safetensors"
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class TextEncoderConfig:
    buckets: int = 4096
    dim: int = 128
    layers: int = 2
    heads: int = 4
    queries: int = 8  # output tokens S
    out_dim: int = 128  # P, the DiT's prompt_embedding_dim
    max_words: int = 32

    @classmethod
    def from_yaml(cls, path: Path) -> "TextEncoderConfig":
        return dataclass_from_yaml(cls, path)


def hash_tokens(text: str, buckets: int, max_words: int) -> list[int]:
    """Bucket ids of the lower-cased words and adjacent word pairs (bucket 0 is reserved for padding)."""
    words = _WORD.findall(text.lower())[:max_words]
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams]


class HashedTextEncoder(nn.Module):
    """Texts -> ``queries`` embedding tokens; an empty text gives all-pad (all-zero) rows."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.buckets, cfg.dim, padding_idx=0)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.query = nn.Parameter(torch.randn(1, cfg.queries, cfg.dim) * 0.02)
        self.pool = nn.MultiheadAttention(cfg.dim, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.out_dim)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``[B, L]`` bucket ids, 0-padded; at least one column."""
        ids = [hash_tokens(t, self.cfg.buckets, self.cfg.max_words) for t in texts]
        width = max([1] + [len(i) for i in ids])
        out = torch.zeros(len(texts), width, dtype=torch.long)
        for row, i in enumerate(ids):
            out[row, :len(i)] = torch.tensor(i, dtype=torch.long)
        return out.to(self.query.device)

    def encode_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bucket ids ``[B, L]`` -> ``(emb [B, S, P], pad_mask [B, S])`` (differentiable)."""
        pad = ids.eq(0)
        empty = pad.all(dim=1)
        key_pad = pad.clone()
        key_pad[empty, 0] = False  # an all-masked row would give NaNs; its output is zeroed below
        h = self.transformer(self.embed(ids), src_key_padding_mask=key_pad)
        q = self.query.expand(ids.shape[0], -1, -1)
        pooled, _ = self.pool(q, h, h, key_padding_mask=key_pad, need_weights=False)
        emb = self.out(self.norm(pooled + q))
        pad_mask = empty[:, None].expand(-1, self.cfg.queries)
        return emb.masked_fill(pad_mask[..., None], 0.0), pad_mask

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_ids(self.tokenize(texts))

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings")
        return super().__call__(texts)

    def save(self, folder: str | Path) -> None:
        save_small_model(self, self.cfg, folder, CONFIG_NAME, WEIGHTS_NAME)

    @classmethod
    def from_folder(cls, folder: str | Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> "HashedTextEncoder":
        folder = Path(folder)
        return load_small_model(cls(TextEncoderConfig.from_yaml(folder / CONFIG_NAME)), folder, WEIGHTS_NAME, device, dtype)
