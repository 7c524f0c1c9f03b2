"""Training data: simulator episodes rendered once to ``runs/``, and latent clips sampled from them.

Rendering on 2 CPU cores costs about as much as a training step, so episodes are rendered once
(``python -m world_engine.train data``) into plain ``.npy`` arrays; the autoencoder trains on their
frames and the DiT on their latents (encoded once and cached next to them).
Arrays: ``frames`` uint8 ``[E, T, H, W, 3]``, ``ctrl`` float16 ``[E, T, n_buttons + 3]`` (the
engine's ``ctrl_vector`` layout), ``caption_ids`` int32 ``[E, T]`` into ``captions.json``,
``theme`` int64 ``[E, T]`` (index into ``THEME_NAMES``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model.text_encoder import TextEncoderConfig, hash_tokens
from ..model.tiny_autoencoder import TinyAutoencoder
from ..sim import EpisodeSpec, rollout
from ..sim.constants import CTRL_DIM
from ..sim.themes import THEME_NAMES
from .config import DataConfig, add_arguments, from_arguments

ARRAYS = ("frames", "ctrl", "caption_ids", "theme")


@dataclass
class Episodes:
    frames: torch.Tensor
    ctrl: torch.Tensor
    caption_ids: torch.Tensor
    theme: torch.Tensor
    captions: list[str]


def render_episodes(cfg: DataConfig, batch: int = 48) -> Episodes:
    """Render ``cfg.episodes`` episodes under the simulator's data policy (themes cycle evenly)."""
    frames = torch.zeros(cfg.episodes, cfg.frames, cfg.image_size, cfg.image_size, 3, dtype=torch.uint8)
    ctrl = torch.zeros(cfg.episodes, cfg.frames, CTRL_DIM, dtype=torch.float16)
    caption_ids = torch.zeros(cfg.episodes, cfg.frames, dtype=torch.int32)
    theme = torch.zeros(cfg.episodes, cfg.frames, dtype=torch.long)
    captions: dict[str, int] = {}
    for lo in range(0, cfg.episodes, batch):
        idx = list(range(lo, min(lo + batch, cfg.episodes)))
        specs = [EpisodeSpec.from_seed(cfg.seed * 1_000_003 + i, n_frames=cfg.frames,
                                       theme=THEME_NAMES[i % len(THEME_NAMES)]) for i in idx]
        for step in rollout(specs, size=cfg.image_size):
            t = step["frame"]
            frames[idx, t] = step["rgb"]
            ctrl[idx, t] = step["ctrl"].half()
            theme[idx, t] = step["theme"]
            caption_ids[idx, t] = torch.tensor([captions.setdefault(c, len(captions)) for c in step["caption"]],
                                               dtype=torch.int32)
        print(f"rendered {idx[-1] + 1}/{cfg.episodes} episodes", flush=True)
    return Episodes(frames, ctrl, caption_ids, theme, list(captions))


def save_episodes(folder: Path, episodes: Episodes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARRAYS:
        np.save(folder / f"{name}.npy", getattr(episodes, name).numpy())
    with open(folder / "captions.json", "w", encoding="utf-8") as f:
        json.dump(episodes.captions, f)


def load_episodes(folder: Path) -> Episodes:
    if not (folder / "frames.npy").is_file():
        raise FileNotFoundError(f"{folder}: no rendered episodes; run `python -m world_engine.train data` first")
    arrays = {name: torch.from_numpy(np.load(folder / f"{name}.npy")) for name in ARRAYS}
    with open(folder / "captions.json", encoding="utf-8") as f:
        captions = json.load(f)
    return Episodes(**arrays, captions=captions)


def tokenize_all(captions: list[str], cfg: TextEncoderConfig) -> torch.Tensor:
    """Bucket ids ``[n_captions, L]`` (0-padded) of every caption, computed once."""
    ids = [hash_tokens(c, cfg.buckets, cfg.max_words) for c in captions]
    out = torch.zeros(len(ids), max(len(i) for i in ids), dtype=torch.long)
    for row, i in enumerate(ids):
        out[row, :len(i)] = torch.tensor(i)
    return out


@torch.no_grad()
def encode_frames(ae: TinyAutoencoder, frames: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """uint8 ``[E, T, H, W, 3]`` -> normalised latents float16 ``[E, T, C, h, w]``."""
    flat = frames.flatten(0, 1)
    z = torch.cat([ae.encode_batch(ae.images_to_input(flat[i:i + chunk])).half()
                   for i in range(0, flat.shape[0], chunk)])
    return z.unflatten(0, frames.shape[:2])


class LatentClips:
    """Random clips of latent frames with their controls, timestamps, caption ids and theme."""

    def __init__(self, data: Path, ae_folder: Path, clip_frames: int, device: torch.device) -> None:
        episodes = load_episodes(data)
        ae = TinyAutoencoder.from_folder(ae_folder / "final")
        cache = ae_folder / "latents.pt"
        if cache.is_file() and cache.stat().st_mtime > (ae_folder / "final").stat().st_mtime:
            latents = torch.load(cache)
        else:
            latents = encode_frames(ae, episodes.frames)
            torch.save(latents, cache)
        self.latents, self.ctrl, self.theme = latents, episodes.ctrl, episodes.theme
        self.caption_ids = episodes.caption_ids.long()
        self.tokens = tokenize_all(episodes.captions, TextEncoderConfig())
        self.clip_frames, self.device = clip_frames, device
        self.latent_channels, self.latent_size = latents.shape[2], latents.shape[3]

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, b: int) -> tuple[torch.Tensor, ...]:
        """``(x0 [B,N,C,h,w], ctrl [B,N,D], timestamps [B,N], text_ids [B,L], theme [B])``.

        10% of clips start at the episode start (the "generate from nothing" mode); timestamps are
        episode frame indices, so global layers see the same dilation phase as in play.
        """
        e, t, n = self.latents.shape[0], self.latents.shape[1], self.clip_frames
        ep = torch.randint(e, (b,))
        start = torch.randint(t - n + 1, (b,))
        start = torch.where(torch.rand(b) < 0.1, torch.zeros_like(start), start)
        frames = start[:, None] + torch.arange(n)
        last = frames[:, -1]
        caption = self.caption_ids[ep, last]
        out = (self.latents[ep[:, None], frames].float(), self.ctrl[ep[:, None], frames].float(), frames,
               self.tokens[caption], self.theme[ep, last].long())
        return tuple(x.to(self.device) for x in out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m world_engine.train data", description=__doc__)
    add_arguments(parser, DataConfig)
    cfg = from_arguments(DataConfig, parser.parse_args(argv))
    save_episodes(cfg.out, render_episodes(cfg))
    print(f"wrote {cfg.episodes} episodes x {cfg.frames} frames to {cfg.out}")
