"""Training data: simulator episodes rendered once to ``runs/``, and latent clips sampled from them.

Rendering on 2 CPU cores costs about as much as a training step, so episodes are rendered once
(``python -m training data``) into plain ``.npy`` arrays; the autoencoder trains on their
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
import torch.nn.functional as F

from world_engine.model.text_encoder import TextEncoderConfig, hash_tokens
from world_engine.model.tiny_autoencoder import TinyAutoencoder
from simulator import EpisodeSpec, WorldBatch, rollout
from simulator.constants import (CTRL_DIM, KEY_BACK, KEY_FORWARD, KEY_JUMP, KEY_LEFT, KEY_RIGHT,
                                 KEY_SPRINT, MOUSE_CAP)
from simulator.policy import Policy, policy_seeds
from simulator.themes import THEME_NAMES
from .config import DataConfig, add_arguments, from_arguments

ARRAYS = ("frames", "ctrl", "caption_ids", "theme")
BRANCH_ARRAYS = ARRAYS + ("start",)


@dataclass
class Episodes:
    frames: torch.Tensor
    ctrl: torch.Tensor
    caption_ids: torch.Tensor
    theme: torch.Tensor
    captions: list[str]
    start: torch.Tensor | None = None  # branched clips: episode frame index of each first frame


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


def control_statistics(ctrl: torch.Tensor) -> dict[str, float]:
    """What the data asks a model to follow: turn-rate quantiles and key shares of ``ctrl [..., D]``."""
    flat = ctrl.reshape(-1, ctrl.shape[-1]).float()
    dx = flat[:, 0].abs()
    keys = flat[:, 2:-1] > 0.5
    stats = {"frames": float(flat.shape[0]), "mean_abs_dx": float(dx.mean()),
             "median_abs_dx": float(dx.median()), "share_dx_ge_6": float((dx >= 6).float().mean()),
             "share_dx_fractional": float((dx != dx.round()).float().mean()),
             "share_no_input": float(((dx == 0) & (flat[:, 1] == 0) & ~keys.any(1)).float().mean())}
    for name, vk in (("W", KEY_FORWARD), ("A", KEY_LEFT), ("S", KEY_BACK), ("D", KEY_RIGHT),
                     ("jump", KEY_JUMP), ("sprint", KEY_SPRINT)):
        stats[f"share_{name}"] = float(keys[:, vk].float().mean())
    return stats


def print_statistics(title: str, stats: dict[str, float]) -> None:
    print(title + ": " + ", ".join(f"{k} {v:.3g}" for k, v in stats.items()), flush=True)


def branch_controls(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random action choices ``[n, D]`` for branch frames: turns at arrow-key and mouse rates
    (either side), walking, strafing, backing up, jumping or standing still, alone or combined."""
    ctrl = torch.zeros(n, CTRL_DIM)
    u = torch.rand(n, 4, generator=generator)
    rate = torch.where(u[:, 1] < 0.4, torch.full((n,), 8.0), 1.0 * (MOUSE_CAP / 1.0) ** u[:, 2])
    side = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    ctrl[:, 0] = torch.where(u[:, 0] < 0.7, side * rate, 0.0)  # 70% turn
    keys = (None, KEY_FORWARD, KEY_FORWARD, KEY_BACK, KEY_LEFT, KEY_RIGHT, KEY_JUMP, None)
    pick = torch.randint(len(keys), (n,), generator=generator)
    for i, key in enumerate(keys):
        if key is not None:
            ctrl[pick == i, 2 + key] = 1.0
    return ctrl


def render_branches(n_bases: int, copies: int, clip_frames: int, branch_frames: int, image_size: int,
                    seed: int, batch: int = 12, max_start: int = 80) -> Episodes:
    """Branched clips: ``copies`` worlds share one state and the policy's actions for the first
    ``clip_frames - branch_frames`` frames, then each takes its own action for the last frames.

    Copy 0 keeps the policy's action; the others draw from :func:`branch_controls`. Such groups are
    the one kind of data that made the control path move the right way in the diagnosis probes
    (``embedded-model-diagnosis.md`` §8): the context alone cannot say which branch comes next.
    Arrays are ``[n_bases * copies, clip_frames, ...]`` (copies of a base are adjacent) plus
    ``start`` (the episode frame index of each clip's first frame).
    """
    generator = torch.Generator().manual_seed(seed)
    rows = n_bases * copies
    frames = torch.zeros(rows, clip_frames, image_size, image_size, 3, dtype=torch.uint8)
    ctrl = torch.zeros(rows, clip_frames, CTRL_DIM, dtype=torch.float16)
    caption_ids = torch.zeros(rows, clip_frames, dtype=torch.int32)
    theme = torch.zeros(rows, clip_frames, dtype=torch.long)
    start = torch.zeros(rows, dtype=torch.long)
    captions: dict[str, int] = {}
    shared = clip_frames - branch_frames
    for lo in range(0, n_bases, batch):
        bases = list(range(lo, min(lo + batch, n_bases)))
        specs = [EpisodeSpec.from_seed(seed * 1_000_003 + 500_000 + i, n_frames=max_start + clip_frames,
                                       theme=THEME_NAMES[i % len(THEME_NAMES)]) for i in bases]
        specs = [s for s in specs for _ in range(copies)]  # copies adjacent
        worlds = WorldBatch(specs, size=image_size)
        policy = Policy(policy_seeds([s.seed for s in specs]))
        # one start age per batch: every world renders the same 12 frames (ages vary across batches)
        age = torch.randint(max_start + 1, (1,), generator=generator).expand(len(specs))
        rows_here = slice(lo * copies, (lo + len(bases)) * copies)
        start[rows_here] = age
        branch_action = torch.zeros(len(specs), CTRL_DIM)
        is_copy = torch.arange(len(specs)) % copies != 0
        for t in range(int(age[0]) + clip_frames):
            action = policy.act(worlds.state, worlds.static.cells)
            k = t - age  # frame within each clip (negative: fast-forward without rendering)
            starting = k == shared
            if bool(starting.any()):  # one action per copy, held for the branch frames
                branch_action[starting] = branch_controls(int(starting.sum()), generator)
            action = torch.where(((k >= shared) & is_copy)[:, None], branch_action, action)
            worlds.step_physics(action)
            inside = (k >= 0) & (k < clip_frames)
            if not bool(inside.any()):
                continue
            rgb = worlds.render().rgb
            names = worlds.captions()
            for i in inside.nonzero()[:, 0].tolist():
                row, ki = lo * copies + i, int(k[i])
                frames[row, ki], ctrl[row, ki] = rgb[i], action[i].half()
                theme[row, ki] = int(worlds.theme_index()[i])
                caption_ids[row, ki] = captions.setdefault(names[i], len(captions))
        print(f"rendered {bases[-1] + 1}/{n_bases} branch groups", flush=True)
    return Episodes(frames, ctrl, caption_ids, theme, list(captions), start)


def save_episodes(folder: Path, episodes: Episodes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in BRANCH_ARRAYS if episodes.start is not None else ARRAYS:
        np.save(folder / f"{name}.npy", getattr(episodes, name).numpy())
    with open(folder / "captions.json", "w", encoding="utf-8") as f:
        json.dump(episodes.captions, f)


def load_episodes(folder: Path) -> Episodes:
    if not (folder / "frames.npy").is_file():
        raise FileNotFoundError(f"{folder}: no rendered episodes; run `python -m training data` first")
    names = BRANCH_ARRAYS if (folder / "start.npy").is_file() else ARRAYS
    arrays = {name: torch.from_numpy(np.load(folder / f"{name}.npy")) for name in names}
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


def cached_latents(ae: TinyAutoencoder, ae_folder: Path, frames: torch.Tensor, name: str) -> torch.Tensor:
    """Latents of ``frames`` under the autoencoder in ``ae_folder/final``, encoded once and cached."""
    cache = ae_folder / f"{name}.pt"
    if cache.is_file() and cache.stat().st_mtime > (ae_folder / "final").stat().st_mtime:
        return torch.load(cache)
    latents = encode_frames(ae, frames)
    torch.save(latents, cache)
    return latents


class LatentClips:
    """Random clips of latent frames with their controls, timestamps, caption ids and theme.

    With branched clips on disk (``<data>/branches``) a ``branch_share`` of every batch comes as
    whole branch groups: clips that share their context and differ only in the last frames' actions.
    """

    def __init__(self, data: Path, ae_folder: Path, clip_frames: int, device: torch.device,
                 branch_share: float = 0.0) -> None:
        episodes = load_episodes(data)
        ae = TinyAutoencoder.from_folder(ae_folder / "final")
        self.latents = cached_latents(ae, ae_folder, episodes.frames, "latents")
        self.ctrl, self.theme = episodes.ctrl, episodes.theme
        self.caption_ids = episodes.caption_ids.long()
        self.tokens = tokenize_all(episodes.captions, TextEncoderConfig())
        self.clip_frames, self.device = clip_frames, device
        self.latent_channels, self.latent_size = self.latents.shape[2], self.latents.shape[3]
        self.branches: Episodes | None = None
        self.branch_share, self.copies, self.branch_frames = branch_share, 1, 0
        if branch_share > 0:
            branches = load_episodes(data / "branches")
            if branches.frames.shape[1] < clip_frames:
                raise ValueError(f"branched clips have {branches.frames.shape[1]} frames, need {clip_frames}")
            self.branch_latents = cached_latents(ae, ae_folder, branches.frames, "branch_latents")
            self.branch_tokens = tokenize_all(branches.captions, TextEncoderConfig())
            self.branches = branches
            layout = json.loads((data / "branches" / "layout.json").read_text())
            self.copies, self.branch_frames = layout["copies"], layout["branch_frames"]

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, b: int) -> tuple[torch.Tensor, ...]:
        """``(x0 [B,N,C,h,w], ctrl [B,N,D], timestamps [B,N], text_ids [B,L], theme [B], scored [B])``.

        10% of episode clips start at the episode start (the "generate from nothing" mode);
        timestamps are episode frame indices, so global layers see the same dilation phase as in
        play. ``scored`` is the number of last frames a branched clip scores (0 for episode clips).
        """
        groups = self._branch_groups(b) if self.branches is not None else 0
        n_plain = b - groups * self.copies
        parts = [self._episode_clips(n_plain)] if n_plain else []
        if groups:
            parts.append(self._branch_clips(groups))
        width = max(p[3].shape[1] for p in parts)  # caption ids are 0-padded per caption set
        parts = [(*p[:3], F.pad(p[3], (0, width - p[3].shape[1])), *p[4:]) for p in parts]
        out = [torch.cat(x) for x in zip(*parts)]
        return tuple(x.to(self.device) for x in out)

    def _branch_groups(self, b: int) -> int:
        """Branch groups in a batch of ``b``: ``b * branch_share / copies`` rounded at random to one of
        its two neighbours, so the share holds on average for any batch size (plain rounding gave a
        batch of 4 at share 0.5 no group at all)."""
        expected = min(b * self.branch_share, b) / self.copies
        whole = int(expected)
        return min(whole + int(torch.rand(()).item() < expected - whole), b // self.copies)

    def _episode_clips(self, b: int) -> tuple[torch.Tensor, ...]:
        e, t, n = self.latents.shape[0], self.latents.shape[1], self.clip_frames
        ep = torch.randint(e, (b,))
        start = torch.randint(t - n + 1, (b,))
        start = torch.where(torch.rand(b) < 0.1, torch.zeros_like(start), start)
        frames = start[:, None] + torch.arange(n)
        last = frames[:, -1]
        caption = self.caption_ids[ep, last]
        return (self.latents[ep[:, None], frames].float(), self.ctrl[ep[:, None], frames].float(), frames,
                self.tokens[caption], self.theme[ep, last].long(), torch.zeros(b, dtype=torch.long))

    def _branch_clips(self, groups: int) -> tuple[torch.Tensor, ...]:
        br, n = self.branches, self.clip_frames
        first = torch.randint(br.frames.shape[0] // self.copies, (groups,)) * self.copies
        rows = (first[:, None] + torch.arange(self.copies)).flatten()
        offset = br.frames.shape[1] - n  # keep the branched end of longer clips
        frames = torch.arange(offset, offset + n)
        timestamps = br.start[rows][:, None] + frames
        caption = br.caption_ids[rows, -1].long()
        return (self.branch_latents[rows][:, frames].float(), br.ctrl[rows][:, frames].float(), timestamps,
                self.branch_tokens[caption], br.theme[rows, -1].long(),
                torch.full((len(rows),), self.branch_frames, dtype=torch.long))


def encode_main(argv: list[str] | None = None) -> None:
    """``python -m training encode``: cache the latents of the rendered frames under a trained AE
    (once, before the DiT stage, so that several DiT processes never encode the same frames)."""
    parser = argparse.ArgumentParser(prog="python -m training encode", description=encode_main.__doc__)
    parser.add_argument("--data", type=Path, default=DataConfig.out)
    parser.add_argument("--ae", type=Path, default=Path(str(DataConfig.out)).parent / "ae")
    parser.add_argument("--part", choices=("episodes", "branches"), default="episodes")
    args = parser.parse_args(argv)
    ae = TinyAutoencoder.from_folder(args.ae / "final")
    folder, name = (args.data, "latents") if args.part == "episodes" else (args.data / "branches", "branch_latents")
    latents = cached_latents(ae, args.ae, load_episodes(folder).frames, name)
    print(f"{args.ae / (name + '.pt')}: latents {list(latents.shape)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training data", description=__doc__)
    add_arguments(parser, DataConfig)
    cfg = from_arguments(DataConfig, parser.parse_args(argv))
    if cfg.episodes:
        episodes = render_episodes(cfg)
        print_statistics("episode controls", control_statistics(episodes.ctrl))
        save_episodes(cfg.out, episodes)
        print(f"wrote {cfg.episodes} episodes x {cfg.frames} frames to {cfg.out}")
    if cfg.branch_groups:
        branches = render_branches(cfg.branch_groups, cfg.branch_copies, cfg.branch_clip_frames,
                                   cfg.branch_frames, cfg.image_size, cfg.seed)
        print_statistics("branch-frame controls",
                         control_statistics(branches.ctrl[:, -cfg.branch_frames:]))
        save_episodes(cfg.out / "branches", branches)
        (cfg.out / "branches" / "layout.json").write_text(
            json.dumps({"copies": cfg.branch_copies, "branch_frames": cfg.branch_frames}))
        print(f"wrote {cfg.branch_groups} branch groups x {cfg.branch_copies} copies to {cfg.out / 'branches'}")
