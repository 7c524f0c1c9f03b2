"""Simulator data: the policy mixture, dataset files, clip sampling, streaming and the eval set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simulator import (ClipDataset, ClipStream, EpisodeSpec, WorldBatch, collate_clips,
                              load_eval_set, make_eval_set, render_eval, rollout, save_eval_set,
                              write_dataset)
from simulator.constants import ACTION_KEYS, CTRL_DIM, MOUSE_CAP
from simulator.dataset import restart_probability
from simulator.policy import IDLE, MODES, TIME_SHARE, TURN, Policy, policy_seeds


pytestmark = pytest.mark.usefixtures("one_thread")


def test_policy_mixture_matches_the_recipe():
    n, frames = 96, 500  # about 3,000 spells: shares within about 0.01 of their expectation
    specs = [EpisodeSpec.from_seed(s, n_frames=frames) for s in range(n)]
    worlds = WorldBatch(specs, size=8)
    policy = Policy(policy_seeds([s.seed for s in specs]))
    modes, ctrls, poses = [], [], []
    for _ in range(frames):
        ctrl = policy.act(worlds.state, worlds.static.cells)
        worlds.step_physics(ctrl)
        modes.append(policy.mode.clone()), ctrls.append(ctrl), poses.append(worlds.pose())
    modes, ctrls, poses = torch.stack(modes), torch.stack(ctrls), torch.stack(poses)
    share = torch.bincount(modes.flatten(), minlength=len(MODES)).float() / modes.numel()
    assert torch.allclose(share, torch.tensor(TIME_SHARE), atol=0.03), share
    assert 0.08 <= share[IDLE] <= 0.15
    assert ctrls[modes == IDLE].abs().sum() == 0  # idle means no input at all
    mouse = ctrls[..., :2]
    dx = mouse[..., 0].abs()
    assert mouse.abs().max() <= MOUSE_CAP and (dx != dx.round()).float().mean() > 0.5  # fractional, as the app sends
    assert dx.mean() > 3.0 and (dx >= 6).float().mean() > 0.25  # turns large enough to see at 64 px
    assert 0.1 < (dx == 0).float().mean() < 0.3
    # a turn spell holds one rate (arrow keys, stick or mouse), within 10% jitter
    turning = (modes[1:] == TURN) & (modes[:-1] == TURN)
    ratio = mouse[1:, :, 0][turning] / mouse[:-1, :, 0][turning]
    assert (ratio > 0).float().mean() > 0.95 and (ratio - 1).abs().median() < 0.15
    # short spells: the past does not tell what the next action is
    switches = (modes[1:] != modes[:-1]).float().mean()
    assert switches > 1 / 12
    keys = ctrls[..., 2:-1].sum((0, 1)).nonzero()[:, 0].tolist()
    assert set(keys) <= set(ACTION_KEYS) and len(keys) == len(ACTION_KEYS)
    # the agent gets around: most episodes visit many cells
    visited = [len({(int(x), int(y)) for x, y in poses[:, b, :2].tolist()}) for b in range(n)]
    assert np.median(visited) > 15


def test_dataset_round_trip(tmp_path):
    seeds = [5, 6, 7]
    index = write_dataset(tmp_path, seeds, n_frames=40, size=16, batch=2, frames_per_shard=80)
    meta = json.loads(index.read_text())
    assert len(meta["shards"]) == 2 and [e["seed"] for e in meta["episodes"]] == seeds
    direct = list(rollout([EpisodeSpec.from_seed(s, n_frames=40) for s in seeds], size=16, aux=True))

    def frames(key, episode, lo, hi):
        return torch.stack([direct[t][key][episode] for t in range(lo, hi)])

    starts = ClipDataset(tmp_path, clip_len=8, start_fraction=1.0)
    for i in range(6):
        clip = starts[i]
        e, start = starts.clip_location(i)
        assert start == 0 and clip["frame_index"].tolist() == list(range(8))
        for key in ("rgb", "ctrl", "pose", "seg"):
            assert torch.equal(clip[key], frames(key, clip["episode"], 0, 8)), key
        assert torch.equal(clip["depth"], frames("depth", clip["episode"], 0, 8).half().float())
        assert clip["caption"] == meta["episodes"][clip["episode"]]["captions"][0]
    middles = ClipDataset(tmp_path, clip_len=8, start_fraction=0.0, seed=3)
    clip = middles[0]
    start = int(clip["frame_index"][0])
    assert start > 0 and torch.equal(clip["rgb"], frames("rgb", clip["episode"], start, start + 8))
    batch = collate_clips([middles[i] for i in range(4)])
    assert batch["rgb"].shape == (4, 8, 16, 16, 3) and batch["ctrl"].shape == (4, 8, CTRL_DIM)
    assert len(batch["captions"]) == 4 and len(batch["captions"][0]) == 8
    shares = np.mean([ClipDataset(tmp_path, clip_len=8).clip_location(i)[1] == 0 for i in range(400)])
    assert 0.05 < shares < 0.2


def test_eval_set_is_seeds_and_actions_and_replays_exactly(tmp_path):
    episodes = make_eval_set(n_episodes=3, n_frames=24)
    save_eval_set(episodes, tmp_path / "eval.npz")
    assert (tmp_path / "eval.npz").stat().st_size < 3000  # no frames on disk
    loaded = load_eval_set(tmp_path / "eval.npz")
    for a, b in zip(episodes, loaded):
        assert a.spec == b.spec and torch.equal(a.actions, b.actions)
    replay = list(render_eval(loaded, size=16))
    live = list(rollout([e.spec for e in episodes], size=16, aux=True))
    for r, lv in zip(replay, live):
        assert torch.equal(r["rgb"], lv["rgb"]) and torch.equal(r["pose"], lv["pose"])
        assert torch.equal(r["seg"], lv["seg"])
    assert all(e.spec.seed >= 10 ** 9 for e in episodes)  # disjoint from training seeds


def test_clip_stream_batches_are_consecutive_and_deterministic():
    kwargs = dict(batch_size=6, clip_len=8, size=16, ss=1, seed=4, n_frames=64)
    a, b = ClipStream(**kwargs), ClipStream(**kwargs)
    first = next(a)
    assert first["rgb"].shape == (6, 8, 16, 16, 3) and first["ctrl"].shape == (6, 8, CTRL_DIM)
    assert first["pose"].shape == (6, 8, 5) and first["attributes"].shape[:2] == (6, 8)
    steps = first["frame_index"][:, 1:] - first["frame_index"][:, :-1]
    assert (steps == 1).all()
    assert len(set(first["frame_index"][:, 0].tolist())) > 1  # slots are spread over episode ages
    assert torch.equal(first["rgb"], next(b)["rgb"])
    starts = [next(a)["frame_index"][:, 0] == 0 for _ in range(12)]
    assert 0.0 < torch.cat(starts).float().mean() < 0.4


def test_restart_probability_gives_the_start_fraction():
    p = restart_probability(0.1, 16)
    mean_clips = (1 - (1 - p) ** 16) / p
    assert mean_clips == pytest.approx(10.0, rel=1e-6)
    assert restart_probability(1.0, 16) == 1.0 and restart_probability(0.01, 16) == 0.0
