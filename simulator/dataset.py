"""Datasets from the simulator: rollouts, sharded files, a clip Dataset, an on-the-fly clip stream
for GPU training, and the seeded evaluation set.

Disk format (one folder): ``index.json`` plus ``shard-00000.safetensors``, ... Each shard holds
whole episodes back to back, one row per frame:

=============  ==========================  =============================================
key            dtype, shape                meaning
=============  ==========================  =============================================
rgb            uint8 [N, H, W, 3]          the frame
ctrl           float32 [N, 259]            controls that produced it (controls.ctrl_vector)
pose           float32 [N, 5]              x, y, z, yaw, pitch after the controls
frame_index    int32 [N]                   frame number within its episode
theme          int32 [N]                   index into THEME_NAMES
attributes     float32 [N, A]              themes.ATTRIBUTE_NAMES one-hot
depth          float16 [N, H, W]           optional; inf where sky
seg            uint8 [N, H, W]             optional; constants.SEG_CLASSES
=============  ==========================  =============================================

``index.json`` lists the episodes (shard, first row, length, spec, captions per segment).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from .constants import ACTION_KEYS, CTRL_DIM, FPS, N_BUTTONS, SEG_CLASSES
from .policy import Policy, policy_seeds
from .themes import ATTRIBUTE_NAMES, THEME_NAMES
from .world import EPISODE_FRAMES, EpisodeSpec, WorldBatch

FORMAT = "simulator/1"
EVAL_SEED_BASE = 10 ** 9  # evaluation episodes never share seeds with training data (< 1e9)


# ----------------------------------------------------------------------------- rollouts

def rollout(specs: Sequence[EpisodeSpec], actions: torch.Tensor | None = None, *,
            size: int | tuple[int, int] = 64, ss: int = 2, aux: bool = False,
            device: torch.device | str = "cpu", n_frames: int | None = None,
            render: bool = True) -> Iterator[dict]:
    """Step B episodes in lockstep and yield one dict per frame.

    Actions come from ``actions`` (float32 [B, T, 259]) or, if None, from the data ``Policy``.
    Each dict holds ``ctrl`` [B, 259], ``pose`` [B, 5], ``theme`` [B], ``attributes`` [B, A],
    ``caption`` (list of B str), ``frame`` (int) and, when ``render``, ``rgb`` [B, H, W, 3]
    uint8 (plus ``depth`` and ``seg`` with ``aux``).
    """
    worlds = WorldBatch(list(specs), size, ss, device, aux)
    policy = None if actions is not None else Policy(policy_seeds([s.seed for s in specs], device))
    total = n_frames or (actions.shape[1] if actions is not None else min(s.n_frames for s in specs))
    for t in range(total):
        ctrl = actions[:, t].to(device) if policy is None else policy.act(worlds.state, worlds.static.cells)
        worlds.step_physics(ctrl)
        step = dict(ctrl=ctrl, pose=worlds.pose(), theme=worlds.theme_index(),
                    attributes=worlds.attributes(), caption=worlds.captions(), frame=t)
        if render:
            out = worlds.render()
            step["rgb"] = out.rgb
            if aux:
                step["depth"], step["seg"] = out.depth, out.seg
        yield step


def policy_actions(specs: Sequence[EpisodeSpec], n_frames: int | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The data policy's actions for each episode, float32 [B, T, 259] (physics only, no
    rendering: the policy reacts to the world state, never to pixels)."""
    steps = [s["ctrl"] for s in rollout(specs, n_frames=n_frames, device=device, render=False)]
    return torch.stack(steps, 1).cpu()


# ----------------------------------------------------------------------------- files

def write_dataset(root: str | Path, seeds: Sequence[int], *, n_frames: int = EPISODE_FRAMES,
                  size: int | tuple[int, int] = 64, ss: int = 2, batch: int = 16,
                  frames_per_shard: int = 8192, aux: bool = True,
                  device: torch.device | str = "cpu") -> Path:
    """Render the policy episodes of ``seeds`` into shards under ``root``; returns index.json."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    index = {"format": FORMAT, "fps": FPS, "size": None, "ctrl_layout":
             f"[mouse_x, mouse_y, buttons({N_BUTTONS}, by Windows VK code), scroll_sign]",
             "themes": list(THEME_NAMES), "attribute_names": list(ATTRIBUTE_NAMES),
             "seg_classes": list(SEG_CLASSES), "shards": [], "episodes": []}
    pending: list[dict[str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        name = f"shard-{len(index['shards']):05d}.safetensors"
        save_file({k: np.ascontiguousarray(np.concatenate([p[k] for p in pending]))
                   for k in pending[0]}, str(root / name))
        index["shards"].append(name)
        pending.clear()

    rows_in_shard = 0
    for lo in range(0, len(seeds), batch):
        specs = [EpisodeSpec.from_seed(s, n_frames=n_frames) for s in seeds[lo:lo + batch]]
        steps = list(rollout(specs, size=size, ss=ss, aux=aux, device=device))

        def stack(key: str) -> torch.Tensor:  # [B, T, ...]
            return torch.stack([s[key] for s in steps], 1).cpu()

        cols = {"rgb": stack("rgb").numpy(), "ctrl": stack("ctrl").numpy(),
                "pose": stack("pose").numpy(), "theme": stack("theme").numpy().astype(np.int32),
                "attributes": stack("attributes").numpy()}
        if aux:
            cols["depth"] = stack("depth").numpy().astype(np.float16)
            cols["seg"] = stack("seg").numpy()
        index["size"] = list(cols["rgb"].shape[2:4])
        for i, spec in enumerate(specs):
            episode = {k: v[i] for k, v in cols.items()}
            episode["frame_index"] = np.arange(n_frames, dtype=np.int32)
            index["episodes"].append({
                "id": len(index["episodes"]), "seed": spec.seed,
                "shard": len(index["shards"]), "row": rows_in_shard, "length": n_frames,
                "spec": spec.to_dict(),
                "captions": [spec.caption(k) for k in range(len(spec.segments))]})
            pending.append(episode)
            rows_in_shard += n_frames
            if rows_in_shard >= frames_per_shard:
                flush()
                rows_in_shard = 0
    flush()
    for ep in index["episodes"]:
        ep["shard"] = index["shards"][ep["shard"]]
    path = root / "index.json"
    path.write_text(json.dumps(index, indent=1))
    return path


class ClipDataset(torch.utils.data.Dataset):
    """Clips of ``clip_len`` consecutive frames from a folder written by ``write_dataset``.

    Item ``i`` is a fixed random clip (seeded by ``seed`` and ``i``): an episode chosen in
    proportion to its length and a start frame that is 0 with probability ``start_fraction``
    (the "generate from nothing" case), else uniform. Items are dicts of tensors:
    ``rgb`` uint8 [T, H, W, 3], ``ctrl`` float32 [T, 259], ``pose`` float32 [T, 5],
    ``theme`` int64 [T], ``attributes`` float32 [T, A], ``frame_index`` int64 [T], ``depth`` /
    ``seg`` when stored, plus ``caption`` (str at the first frame), ``captions`` (list of T str,
    they differ across a theme switch), ``episode`` and ``seed`` (int). Batch them with
    ``collate_clips``.
    """

    def __init__(self, root: str | Path, clip_len: int = 32, start_fraction: float = 0.1,
                 length: int | None = None, seed: int = 0) -> None:
        self.root = Path(root)
        self.index = json.loads((self.root / "index.json").read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{self.root} is not a {FORMAT} dataset")
        self.episodes = [e for e in self.index["episodes"] if e["length"] >= clip_len]
        if not self.episodes:
            raise ValueError(f"no episode in {self.root} has {clip_len} frames")
        self.clip_len, self.start_fraction, self.seed = clip_len, start_fraction, seed
        weights = np.array([e["length"] for e in self.episodes], np.float64)
        self._cdf = np.cumsum(weights) / weights.sum()
        self.length = length or int(weights.sum()) // clip_len
        self._files: dict[tuple[int, str], object] = {}

    def __len__(self) -> int:
        return self.length

    def _file(self, name: str):
        key = (os.getpid(), name)  # one handle per worker process
        if key not in self._files:
            self._files[key] = safe_open(str(self.root / name), framework="pt")
        return self._files[key]

    def clip_location(self, i: int) -> tuple[int, int]:
        """(episode position in ``self.episodes``, first frame) of item ``i``."""
        g = np.random.default_rng([self.seed, i])
        e = int(np.searchsorted(self._cdf, g.random(), side="right"))
        e = min(e, len(self.episodes) - 1)
        last = self.episodes[e]["length"] - self.clip_len
        start = 0 if g.random() < self.start_fraction or last == 0 else int(g.integers(1, last + 1))
        return e, start

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        e, start = self.clip_location(i)
        ep = self.episodes[e]
        f = self._file(ep["shard"])
        lo, hi = ep["row"] + start, ep["row"] + start + self.clip_len
        item = {k: f.get_slice(k)[lo:hi] for k in f.keys()}
        for k in ("theme", "frame_index"):
            item[k] = item[k].long()
        if "depth" in item:
            item["depth"] = item["depth"].float()
        spec = EpisodeSpec.from_dict(ep["spec"])
        item["captions"] = [ep["captions"][spec.segment_at(t)] for t in range(start, start + self.clip_len)]
        item["caption"] = item["captions"][0]
        item["episode"], item["seed"] = ep["id"], ep["seed"]
        return item


def collate_clips(items: list[dict]) -> dict:
    """Stack clip dicts into a batch; strings stay lists (``captions``: [B][T])."""
    out = {}
    for k, v in items[0].items():
        out[k] = torch.stack([it[k] for it in items]) if isinstance(v, torch.Tensor) else \
            [it[k] for it in items]
    return out


# ----------------------------------------------------------------------------- on the fly

def restart_probability(start_fraction: float, max_clips: int) -> float:
    """Per-clip probability of restarting an episode (capped at ``max_clips`` clips) so that
    ``start_fraction`` of all clips start at frame 0: solves (1 - (1-p)^L) / p = 1/fraction."""
    if start_fraction >= 1:
        return 1.0
    target = 1.0 / max(start_fraction, 1e-9)
    if target >= max_clips:
        return 0.0
    lo, hi = 1e-9, 1.0
    for _ in range(60):
        p = (lo + hi) / 2
        mean = (1 - (1 - p) ** max_clips) / p
        lo, hi = (p, hi) if mean > target else (lo, p)
    return (lo + hi) / 2


class ClipStream:
    """Endless batches of clips rendered on the fly, without disk, on any device.

    B slots each play an episode with the data policy; every ``next()`` renders the next
    ``clip_len`` frames of all slots. At clip boundaries a slot restarts with a new seed with the
    probability that makes ``start_fraction`` of clips begin at frame 0, and always when its
    episode would pass ``n_frames``. Batches are dicts: ``rgb`` uint8 [B, T, H, W, 3],
    ``ctrl`` float32 [B, T, 259], ``pose`` [B, T, 5], ``theme`` [B, T], ``attributes``
    [B, T, A], ``frame_index`` [B, T] (tensors on ``device``), ``depth``/``seg`` with ``aux``,
    ``captions`` ([B][T] str), ``caption`` (B str, at each clip's first frame) and ``seed`` (B
    episode seeds: clips never straddle episodes).
    """

    def __init__(self, batch_size: int = 64, clip_len: int = 32, *, size: int | tuple[int, int] = 64,
                 ss: int = 2, device: torch.device | str = "cpu", seed: int = 0,
                 start_fraction: float = 0.1, n_frames: int = EPISODE_FRAMES, aux: bool = False,
                 warmup_clips: int | None = None) -> None:
        self.b, self.clip_len, self.seed, self.n_frames = batch_size, clip_len, seed, n_frames
        self.device, self.aux = torch.device(device), aux
        self.p_restart = restart_probability(start_fraction, n_frames // clip_len)
        self.episodes = [0] * batch_size  # episodes started per slot
        self.clips = 0
        specs = [self._spec(i) for i in range(batch_size)]
        self.worlds = WorldBatch(specs, size, ss, device, aux)
        self.policy = Policy(policy_seeds([s.seed for s in specs], device))
        # Warm-up without rendering: slot i restarts so that it ends at a random age, so the
        # first batches are not all episode starts.
        max_clips = max(n_frames // clip_len, 1)
        warmup = max_clips if warmup_clips is None else warmup_clips
        age = np.random.default_rng([seed, 2]).integers(0, max_clips, batch_size)
        for c in range(warmup):
            for _ in range(clip_len):
                self.worlds.step_physics(self.policy.act(self.worlds.state, self.worlds.static.cells))
            self._restarts(force=(warmup - 1 - c) == age)

    def _spec(self, slot: int) -> EpisodeSpec:
        entropy = np.random.SeedSequence([self.seed, slot, self.episodes[slot]])
        episode_seed = int(entropy.generate_state(1, np.uint64)[0]) % EVAL_SEED_BASE
        return EpisodeSpec.from_seed(episode_seed, n_frames=self.n_frames)

    def _restarts(self, force: np.ndarray | None = None) -> None:
        """Start new episodes in the slots that draw a restart, are full, or are forced."""
        g = np.random.default_rng([self.seed, 1, self.clips])
        self.clips += 1
        age = self.worlds.t + 1
        restart = (g.random(self.b) < self.p_restart) | (age + self.clip_len > self.n_frames)
        if force is not None:
            restart |= force
        slots = np.nonzero(restart)[0].tolist()
        if slots:
            for i in slots:
                self.episodes[i] += 1
            specs = [self._spec(i) for i in slots]
            self.worlds.reset(slots, specs)
            idx = torch.tensor(slots, device=self.device)
            self.policy.reset(idx, policy_seeds([s.seed for s in specs], self.device))

    def __iter__(self) -> "ClipStream":
        return self

    def __next__(self) -> dict:
        w, t_len = self.worlds, self.clip_len
        frames: dict[str, list] = {k: [] for k in ("rgb", "ctrl", "pose", "theme", "attributes",
                                                    "frame_index", "captions")}
        if self.aux:
            frames.update(depth=[], seg=[])
        for _ in range(t_len):
            ctrl = self.policy.act(w.state, w.static.cells)
            w.step_physics(ctrl)
            out = w.render()
            frames["rgb"].append(out.rgb)
            frames["ctrl"].append(ctrl)
            frames["pose"].append(w.pose())
            frames["theme"].append(w.theme_index())
            frames["attributes"].append(w.attributes())
            frames["frame_index"].append(torch.from_numpy(w.t.copy()))
            frames["captions"].append(w.captions())
            if self.aux:
                frames["depth"].append(out.depth)
                frames["seg"].append(out.seg)
        batch = {k: torch.stack(v, 1).to(self.device) for k, v in frames.items() if k != "captions"}
        batch["captions"] = [list(c) for c in zip(*frames["captions"])]
        batch["caption"] = [c[0] for c in batch["captions"]]
        batch["seed"] = [spec.seed for spec in w.specs]
        self._restarts()
        return batch


# ----------------------------------------------------------------------------- evaluation set

@dataclass
class EvalEpisode:
    """One evaluation episode: a spec (a seed) and the actions to replay in it."""

    spec: EpisodeSpec
    actions: torch.Tensor  # float32 [T, 259]


def make_eval_set(n_episodes: int = 100, n_frames: int = 1000, base_seed: int = EVAL_SEED_BASE,
                  device: torch.device | str = "cpu") -> list[EvalEpisode]:
    """The fixed evaluation episodes: seeds ``base_seed + i`` with the data policy's actions."""
    specs = [EpisodeSpec.from_seed(base_seed + i, n_frames=n_frames) for i in range(n_episodes)]
    actions = policy_actions(specs, device=device)
    return [EvalEpisode(s, a) for s, a in zip(specs, actions)]


def save_eval_set(episodes: Sequence[EvalEpisode], path: str | Path) -> None:
    """Store specs and actions only (about 11 bytes per frame): frames are rendered on demand."""
    actions = torch.stack([e.actions for e in episodes])
    keys = actions[..., 2:2 + N_BUTTONS] > 0.5
    used = torch.tensor(ACTION_KEYS)
    if bool(keys.sum() != keys[..., used].sum()):
        raise ValueError("actions use keys outside constants.ACTION_KEYS")
    bits = (keys[..., used].long() << torch.arange(len(ACTION_KEYS))).sum(-1)
    np.savez_compressed(
        path, specs=np.array(json.dumps([e.spec.to_dict() for e in episodes])),
        mouse=actions[..., :2].numpy().astype(np.float32), keys=bits.numpy().astype(np.uint16),
        scroll=actions[..., -1].numpy().astype(np.int8))


def load_eval_set(path: str | Path) -> list[EvalEpisode]:
    """Episodes saved by ``save_eval_set``."""
    data = np.load(path)
    specs = [EpisodeSpec.from_dict(d) for d in json.loads(str(data["specs"]))]
    mouse, bits, scroll = (torch.from_numpy(data[k]) for k in ("mouse", "keys", "scroll"))
    actions = torch.zeros(*bits.shape, CTRL_DIM)
    actions[..., :2] = mouse
    for i, vk in enumerate(ACTION_KEYS):
        actions[..., 2 + vk] = ((bits.long() >> i) & 1).float()
    actions[..., -1] = scroll.float()
    return [EvalEpisode(s, a) for s, a in zip(specs, actions)]


def render_eval(episodes: Sequence[EvalEpisode], *, size: int | tuple[int, int] = 64, ss: int = 2,
                aux: bool = True, device: torch.device | str = "cpu") -> Iterator[dict]:
    """Replay evaluation episodes in lockstep, yielding per-frame dicts as ``rollout`` does."""
    actions = torch.stack([e.actions for e in episodes])
    return rollout([e.spec for e in episodes], actions, size=size, ss=ss, aux=aux, device=device)
