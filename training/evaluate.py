"""Score a model folder against the simulator: the same seeds and the same actions (recipe §4.4).

Every section renders its ground truth in one batched simulator call, drives the model through the
public engine API (``append_latent`` / ``gen_frame``) and seeds the noise of each rollout, so paired
rollouts (true vs shuffled actions, +r vs -r turns) share their noise and differ only by control.
``docs/eval/README.md`` explains every number in the report and its target.

  1. fps: ``measure_fps`` on one thread, the target's condition (eager, and with ``--compiled-fps`` the
     app's compiled CPU path, which the target then uses);
  2. open loop: PSNR at horizons 1..8 from 8 true context frames on >= 32 episodes, from the MSE pooled
     over episodes, for the model under true / shuffled / mirrored actions, copy-last-frame, the
     autoencoder (AE) reconstruction and the oracle (the simulator under the same altered actions, seen
     through the AE: the best ΔPSNR any model behind this AE can reach);
  3. turn probes: one state branched into +r and -r turns; each generated frame should be nearer to
     the simulator's frame of its own branch than to the other branch's;
  4. drift: 2000 generated frames; sharpness, motion and contrast of the last 100 against ground truth;
  5. idle: 64 frames without input after a moving context;
  6. prompt: a theme classifier on the block colours of generated frames, as a share of the
     simulator's own score under the same protocol.
Writes ``report.json``, ``rollout.png`` and ``turns.png`` to ``--out``; prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from simulator import CTRL_DIM, EpisodeSpec, Policy, WorldBatch, make_caption
from simulator.dataset import EVAL_SEED_BASE
from simulator.maps import MapSpec
from simulator.policy import policy_seeds
from simulator.themes import THEME_NAMES
from world_engine.controls import VK, CtrlInput
from world_engine.engine import WorldEngine
from .fps import measure_fps

CONTEXT = 8  # true frames written into the history before a rollout
HORIZON = 8  # open-loop horizons 1..8
BURN_IN = 24  # windows start this far into an episode, once the data policy is moving
PROBE_FRAMES = 4  # frames per turn-probe branch
TAIL = 100  # drift metrics use the last TAIL frames
PROMPT_FRAMES = 16  # frames generated from an empty history per prompt; the last 4 are classified
SIZE = 64
MB = 1e6
# Seeds >= EVAL_SEED_BASE are never used for training data; each section has its own block.
SEEDS = {name: EVAL_SEED_BASE + 10_000_000 + 100_000 * i for i, name in enumerate(
    ("open_loop", "probes", "drift", "idle", "classifier", "prompt"))}


@dataclass
class Settings:
    """How much of each section to run; the defaults are the issue's protocol (~15 min at 30 ms/frame)."""

    episodes: int = 32  # open-loop episodes
    probes: int = 32  # turn-probe states
    turn_rates: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)  # mouse units per frame (0.5 degree each)
    walk_turn_rate: float = 8.0  # also probe W + this turn rate; 0 disables
    drift_frames: int = 2000
    drift_episodes: int = 2
    idle_episodes: int = 8
    idle_frames: int = 64
    theme_seeds: int = 4  # held-out captions per theme
    classifier_episodes: int = 6  # simulator episodes per theme to train the theme classifier
    fps_frames: int = 200
    steps: int | None = None  # engine.set_steps(steps) for every rollout; None = the model's schedule
    compiled_fps: bool = False  # also time the app's compiled CPU path (compile_step; minutes cold)


# ----------------------------------------------------------------------------- small metrics

def to_ctrl(vec: torch.Tensor) -> CtrlInput:
    """The engine's input for one control vector ``[mouse_x, mouse_y, 256 buttons, scroll]``."""
    buttons = {int(i) for i in torch.nonzero(vec[2:-1]).flatten()}
    return CtrlInput(button=buttons, mouse=(float(vec[0]), float(vec[1])))


_MIRRORED_KEYS = ((VK["A"], VK["D"]), (VK["LEFT"], VK["RIGHT"]))


def mirror_actions(ctrl: torch.Tensor) -> torch.Tensor:
    """Left-right mirrored controls ``[..., 259]``: mouse dx negated, A<->D and the arrow keys swapped.
    A model that follows its controls must then diverge from the true future."""
    out = ctrl.clone()
    out[..., 0] = -ctrl[..., 0]
    for left, right in _MIRRORED_KEYS:
        out[..., 2 + left], out[..., 2 + right] = ctrl[..., 2 + right], ctrl[..., 2 + left]
    return out


def frame_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame MSE on a [0, 1] scale of uint8 frames ``[..., H, W, 3]`` -> ``[...]``."""
    return ((a.float() - b.float()) / 255).square().mean(dim=(-3, -2, -1))


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a [0, 1]-scale MSE; no cap (identical frames give inf)."""
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two uint8 frame stacks, from their pooled MSE."""
    return psnr_from_mse(frame_mse(a, b).mean().item())


class PooledMSE:
    """Squared error per method, episode and horizon, so PSNR comes from the MSE pooled over episodes.

    A mean of per-frame PSNRs is dominated by near-static windows (tens of dB each); pooling the error
    first weighs every pixel equally (diagnosis §0 item 8). The per-episode errors are kept for the
    jackknife (``jackknife_se``) and for paired comparisons of two reports (``training.compare``)."""

    def __init__(self) -> None:
        self.errors: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        """One episode: ``pred`` and ``target`` are ``[H, h, w, 3]`` uint8, horizon first."""
        self.errors.setdefault(name, []).append(frame_mse(pred, target).double())

    def per_episode(self, name: str) -> torch.Tensor:
        """``[episodes, H]`` MSE of one method."""
        return torch.stack(self.errors[name])

    def psnr(self, name: str) -> list[float]:
        return pooled_psnr(self.per_episode(name))

    def table(self) -> dict[str, list[float]]:
        return {name: self.psnr(name) for name in self.errors}


def pooled_psnr(mse: torch.Tensor | np.ndarray) -> list[float]:
    """PSNR per horizon of per-episode MSEs ``[episodes, H]``, from their mean over episodes."""
    return [psnr_from_mse(float(m)) for m in np.asarray(mse, dtype=np.float64).mean(axis=0)]


def jackknife_se(statistic: Callable[[np.ndarray], float], n: int) -> float:
    """Standard error of ``statistic(units)`` over ``n`` held-out units, by the leave-one-out jackknife.

    Decisions within one probe state (or frames within one episode) are correlated, so a binomial error
    over all decisions would be too small; the unit left out is the state or episode. ``statistic``
    gets the indices of the units kept. For a mean it gives exactly the sample standard error."""
    if n < 2:
        return math.nan
    loo = np.array([statistic(np.delete(np.arange(n), i)) for i in range(n)])
    return float(math.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum()))


def branch_decisions(gen: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearer-branch test. ``gen`` and ``gt`` are ``[..., 2, T, h, w, 3]`` (branch +r, branch -r).

    Returns ``(correct, valid)``, both bool ``[..., 2, T]``: each generated frame is nearer (MSE) to the
    simulator frame of its own branch than to the other branch's; ``valid`` is False where the two
    simulator branches are identical (no decision is possible there)."""
    own = frame_mse(gen, gt)
    other = frame_mse(gen, gt.flip(-5))
    valid = (frame_mse(gt[..., :1, :, :, :, :], gt[..., 1:, :, :, :, :]) > 0).expand_as(own)
    return own < other, valid


def share(hits: torch.Tensor, valid: torch.Tensor) -> float:
    """Fraction of ``hits`` among the ``valid`` decisions (nan when none is valid)."""
    n = int(valid.sum())
    return float((hits & valid).sum()) / n if n else math.nan


def sharpness(frames: torch.Tensor) -> float:
    """Mean variance of the Laplacian of grey frames ``[N, H, W, 3]`` uint8: blur lowers it."""
    grey = frames.float().mean(dim=-1, keepdim=True).permute(0, 3, 1, 2) / 255
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(grey, kernel).var(dim=(1, 2, 3)).mean().item()


def motion(frames: torch.Tensor) -> float:
    """Mean absolute frame-to-frame change (grey levels 0..255) of frames ``[N, H, W, 3]``."""
    return (frames[1:].float() - frames[:-1].float()).abs().mean().item() if len(frames) > 1 else 0.0


def horizontal_shift(a: torch.Tensor, b: torch.Tensor) -> float:
    """Horizontal shift (pixels, + = content moved right) from frame ``a`` to ``b``, by phase correlation."""
    ga, gb = (x.float().mean(dim=-1) for x in (a, b))
    fa, fb = torch.fft.rfft2(ga - ga.mean()), torch.fft.rfft2(gb - gb.mean())
    cross = fb * fa.conj()
    corr = torch.fft.irfft2(cross / cross.abs().clamp_min(1e-8), s=ga.shape).sum(dim=0)
    shift = int(corr.argmax())
    return float(shift if shift <= ga.shape[1] // 2 else shift - ga.shape[1])


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


# ----------------------------------------------------------------------------- simulator

@dataclass
class Episodes:
    """Held-out episodes and their maps, built once: a map costs more than rendering a few frames,
    and the branches of one state share it."""

    specs: list[EpisodeSpec]
    maps: list[MapSpec]

    def repeat(self, k: int) -> "Episodes":
        """Every episode ``k`` times in a row (the order of ``repeat_interleave``)."""
        return Episodes([s for s in self.specs for _ in range(k)], [m for m in self.maps for _ in range(k)])


def episodes(base: int, n: int, frames: int) -> Episodes:
    """``n`` held-out episodes from seed ``base`` on, without theme switches, cycling through the 8 themes."""
    specs = [EpisodeSpec.from_seed(base + i, n_frames=frames, switch_probability=0.0,
                                   theme=THEME_NAMES[i % len(THEME_NAMES)]) for i in range(n)]
    return Episodes(specs, [s.build_map() for s in specs])


def policy_actions(ep: Episodes, frames: int) -> torch.Tensor:
    """The data policy's actions ``[B, frames, 259]``, physics only: ``simulator.policy_actions`` on
    the prebuilt maps."""
    worlds = WorldBatch(ep.specs, SIZE, maps=ep.maps)
    policy = Policy(policy_seeds([s.seed for s in ep.specs]))
    out = []
    for _ in range(frames):
        ctrl = policy.act(worlds.state, worlds.static.cells)
        worlds.step_physics(ctrl)
        out.append(ctrl.cpu())
    return torch.stack(out, 1)


def render(ep: Episodes, actions: torch.Tensor, keep: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
    """Frames ``[B, len(keep), 64, 64, 3]`` of all episodes under ``actions [B, T, 259]``, and captions.

    ``simulator.rollout`` batched, but only the frames in ``keep`` are rendered: burn-ins and the
    middle of long rollouts are stepped through physics alone (the frames are the same: rendering
    does not change the state)."""
    worlds = WorldBatch(ep.specs, SIZE, maps=ep.maps)
    wanted, frames = set(keep), []
    for t in range(max(keep) + 1):
        worlds.step_physics(actions[:, t])
        if t in wanted:
            frames.append(worlds.render().rgb.cpu())
    return torch.stack(frames, 1), worlds.captions()


def with_future(actions: torch.Tensor, start: int, future: torch.Tensor) -> torch.Tensor:
    """``actions`` with frames ``start..`` replaced by ``future``."""
    out = actions.clone()
    out[:, start:] = future
    return out


# ----------------------------------------------------------------------------- engine
# The helpers that drive the engine run under inference mode: nothing here needs gradients, and the
# engine's own tensors (its KV cache) are inference tensors.

def set_prompt(engine: WorldEngine, text: str) -> None:
    """Prompt the model when it takes prompts (re-encode only when the text changes)."""
    if engine.config.prompt_conditioning is not None and engine.prompt != text:
        engine.set_prompt(text)


@torch.inference_mode()
def encode(engine: WorldEngine, frames: torch.Tensor) -> list[torch.Tensor]:
    return [engine.autoencoder.encode(f) for f in frames]


@torch.inference_mode()
def reconstruct(engine: WorldEngine, frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[..., h, w, 3]`` through the autoencoder: what a perfect dynamics model would show."""
    ae = engine.autoencoder
    flat = frames.reshape(-1, *frames.shape[-3:])
    return torch.stack([ae.decode(ae.encode(f)).cpu() for f in flat]).view(frames.shape)


@torch.inference_mode()
def generate(engine: WorldEngine, latents: Sequence[torch.Tensor], context_ctrl: torch.Tensor,
             future_ctrl: torch.Tensor, prompt: str, seed: int) -> torch.Tensor:
    """Write the context latents into a fresh history, then generate one frame per future control.
    A fixed ``seed`` gives every branch of one state the same noise."""
    engine.reset(seed=seed)
    set_prompt(engine, prompt)
    for latent, c in zip(latents, context_ctrl):
        engine.append_latent(latent, to_ctrl(c))
    return torch.stack([engine.gen_frame(to_ctrl(c)).cpu() for c in future_ctrl])


# ----------------------------------------------------------------------------- 2. open loop

def open_loop_ground_truth(n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Simulator windows ``[3, n, CONTEXT + HORIZON, ...]`` and their actions, for the true, shuffled
    (the next episode's) and mirrored future actions; the context is the same in all three."""
    frames = BURN_IN + CONTEXT + HORIZON
    ep = episodes(SEEDS["open_loop"], n, frames)
    true = policy_actions(ep, frames)
    start = BURN_IN + CONTEXT
    variants = torch.stack([true, with_future(true, start, true.roll(1, dims=0)[:, start:]),
                            with_future(true, start, mirror_actions(true[:, start:]))])
    tripled = Episodes(ep.specs * 3, ep.maps * 3)
    rgb, captions = render(tripled, variants.flatten(0, 1), range(BURN_IN, frames))
    return rgb.unflatten(0, (3, n)), variants[:, :, BURN_IN:], captions[:n]


def open_loop(engine: WorldEngine, n: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Pooled PSNR at horizons 1..8 of every method; returns the report, the true futures and the
    model's rollouts under true actions (for the picture)."""
    gt, actions, captions = open_loop_ground_truth(n)
    pooled, gens, static = PooledMSE(), [], 0
    for e in range(n):
        context, futures = gt[0, e, :CONTEXT], gt[:, e, CONTEXT:]
        latents = encode(engine, context)
        for v, name in enumerate(("model", "model_shuffled", "model_mirrored")):
            gen = generate(engine, latents, actions[v, e, :CONTEXT], actions[v, e, CONTEXT:], captions[e], seed=e)
            pooled.add(name, gen, futures[0])
            if v == 0:
                gens.append(gen)
        pooled.add("copy_last", context[-1].expand_as(futures[0]), futures[0])
        for v, name in enumerate(("ae_reconstruction", "oracle_shuffled", "oracle_mirrored")):
            pooled.add(name, reconstruct(engine, futures[v]), futures[0])
        pooled.add("simulator_shuffled", futures[1], futures[0])
        pooled.add("simulator_mirrored", futures[2], futures[0])
        static += int(frame_mse(context[-1], futures[0, 0]) < 1e-4)
    table = pooled.table()
    last = HORIZON - 1
    pairs = {"model_shuffled": ("model", "model_shuffled"), "oracle_shuffled": ("ae_reconstruction", "oracle_shuffled"),
             "model_mirrored": ("model", "model_mirrored"), "oracle_mirrored": ("ae_reconstruction", "oracle_mirrored")}
    delta = {key: table[a][last] - table[b][last] for key, (a, b) in pairs.items()}
    mse = {name: pooled.per_episode(name).numpy() for name in ("model", "model_shuffled", "model_mirrored")}
    report = {"episodes": n, "context": CONTEXT, "burn_in": BURN_IN, "psnr": table,
              "delta_psnr_h8": delta, "static_windows_h1": static / n,
              "se": {"psnr_h4_model": jackknife_se(lambda i: pooled_psnr(mse["model"][i])[3], n),
                     "psnr_h8_model": jackknife_se(lambda i: pooled_psnr(mse["model"][i])[last], n),
                     **{key: jackknife_se(lambda i, a=a, b=b: delta_psnr(mse[a][i], mse[b][i]), n)
                        for key, (a, b) in pairs.items() if key.startswith("model")}},
              "per_episode_mse": {name: m.tolist() for name, m in mse.items()}}
    return report, gt[0, :, CONTEXT:], torch.stack(gens)


def delta_psnr(mse_a: np.ndarray, mse_b: np.ndarray, horizon: int = HORIZON - 1) -> float:
    """Pooled PSNR of ``a`` minus that of ``b`` at ``horizon``, from per-episode MSEs ``[episodes, H]``."""
    return pooled_psnr(mse_a)[horizon] - pooled_psnr(mse_b)[horizon]


# ----------------------------------------------------------------------------- 3. turn probes

def probe_conditions(rates: Sequence[float], walk_rate: float) -> list[tuple[str, float, frozenset[int]]]:
    """(name, mouse dx per frame, held buttons) of each probe: turns in place, and W while turning."""
    conds = [(f"turn{r:g}", float(r), frozenset()) for r in rates]
    return conds + ([(f"walk_turn{walk_rate:g}", float(walk_rate), frozenset({VK["W"]}))] if walk_rate else [])


def probe_ground_truth(n: int, conds: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                     list[str]]:
    """Contexts ``[n, C, ...]``, their controls, the branch controls ``[n, K, 2, 4, D]`` and the
    simulator's branches ``[n, K, 2, 4, ...]`` (index 0: +r, 1: -r) of ``n`` held-out states."""
    start = BURN_IN + CONTEXT
    ep = episodes(SEEDS["probes"], n, start + PROBE_FRAMES)
    prefix = policy_actions(ep, start)
    context, captions = render(ep, prefix, range(BURN_IN, start))
    branch = torch.zeros(n, len(conds), 2, PROBE_FRAMES, prefix.shape[-1])
    for k, (_, rate, buttons) in enumerate(conds):
        branch[:, k, 0, :, 0], branch[:, k, 1, :, 0] = rate, -rate
        for b in buttons:
            branch[:, k, :, :, 2 + b] = 1.0
    per_branch = len(conds) * 2
    actions = torch.cat((prefix.repeat_interleave(per_branch, 0), branch.flatten(0, 2)), dim=1)
    futures, _ = render(ep.repeat(per_branch), actions, range(start, start + PROBE_FRAMES))
    return context, prefix[:, BURN_IN:], branch, futures.view(*branch.shape[:3], *futures.shape[1:]), captions


def shift_agreement(context_last: torch.Tensor, gen: torch.Tensor, gt: torch.Tensor) -> bool:
    """The older measure: does the summed phase-correlation shift of the generated branch have the
    sign of the simulator's (and is the simulator's non-zero)?"""
    def total(frames: torch.Tensor) -> float:
        seq = torch.cat((context_last[None], frames))
        return sum(horizontal_shift(a, b) for a, b in zip(seq, seq[1:]))
    s_gen, s_gt = total(gen), total(gt)
    return bool(s_gt != 0 and np.sign(s_gen) == np.sign(s_gt))


def turn_probes(engine: WorldEngine, n: int, conds: list) -> tuple[dict, dict]:
    """Branch each state into +r and -r for every condition; score nearer-branch decisions for the
    model and for the oracle (the simulator's own branch through the AE)."""
    context, context_ctrl, branch, gt, captions = probe_ground_truth(n, conds)
    gen = torch.empty_like(gt)
    for s in range(n):
        latents = encode(engine, context[s])
        for k in range(len(conds)):
            for sign in range(2):
                gen[s, k, sign] = generate(engine, latents, context_ctrl[s], branch[s, k, sign], captions[s],
                                           seed=s)
    correct, valid = branch_decisions(gen, gt)
    recon = reconstruct(engine, gt)
    oracle, _ = branch_decisions(recon, gt)
    correct_ae, _ = branch_decisions(gen, recon)
    shifts = torch.tensor([[shift_agreement(context[s, -1], gen[s, k, i], gt[s, k, i]) for i in range(2)]
                           for s in range(n) for k in range(len(conds))]).view(n, len(conds), 2)
    names = [c[0] for c in conds]
    report = {
        "states": n, "frames": PROBE_FRAMES, "decisions": int(valid.sum()),
        "accuracy": share(correct, valid),
        "accuracy_se": jackknife_se(lambda i: share(correct[i], valid[i]), n),
        "per_state_correct": (correct & valid).flatten(1).sum(1).tolist(),
        "per_state_valid": valid.flatten(1).sum(1).tolist(),
        "per_rate": {m: share(correct[:, k], valid[:, k]) for k, m in enumerate(names)},
        "per_horizon": [share(correct[..., h], valid[..., h]) for h in range(PROBE_FRAMES)],
        "per_rate_horizon": {m: [share(correct[:, k, :, h], valid[:, k, :, h]) for h in range(PROBE_FRAMES)]
                             for k, m in enumerate(names)},
        "oracle_accuracy": share(oracle, valid),
        "oracle_per_rate": {m: share(oracle[:, k], valid[:, k]) for k, m in enumerate(names)},
        "accuracy_vs_ae_references": share(correct_ae, valid),
        "per_rate_vs_ae_references": {m: share(correct_ae[:, k], valid[:, k]) for k, m in enumerate(names)},
        "shift_sign_agreement": shifts.float().mean().item(),
        "shift_sign_per_rate": {m: shifts[:, k].float().mean().item() for k, m in enumerate(names)},
        "branch_gap_psnr": {m: {"model": psnr(gen[:, k, 0], gen[:, k, 1]),
                                "simulator": psnr(gt[:, k, 0], gt[:, k, 1])} for k, m in enumerate(names)},
    }
    return report, {"context": context, "gen": gen, "gt": gt, "names": names}


# ----------------------------------------------------------------------------- 4. drift

def drift_metrics(gen: torch.Tensor, gt: torch.Tensor, recon: torch.Tensor) -> dict:
    """Last-window health of a long rollout against the simulator's window under the same actions:
    sharpness (blur), motion (a frozen picture) and pixel spread (a washed-out or flat picture)."""
    sharp_gt = sharpness(gt)
    out = {"sharpness_ratio": ratio(sharpness(gen), sharp_gt),
           "ae_reconstruction_sharpness_ratio": ratio(sharpness(recon), sharp_gt),
           "model_vs_ae_sharpness_ratio": ratio(sharpness(gen), sharpness(recon)),
           "motion_ratio": ratio(motion(gen), motion(gt)),
           "std_ratio": ratio(gen.float().std().item(), gt.float().std().item())}
    out["still_moving"] = bool(out["motion_ratio"] >= 0.25)
    out["collapsed"] = bool(out["std_ratio"] < 0.25 or out["motion_ratio"] < 0.1)
    return out


@torch.inference_mode()
def long_rollout(engine: WorldEngine, context: torch.Tensor, actions: torch.Tensor, prompt: str,
                 seed: int) -> tuple[torch.Tensor, list[float]]:
    """Generate ``len(actions) - CONTEXT`` frames after the true context; also times each frame."""
    engine.reset(seed=seed)
    set_prompt(engine, prompt)
    for img, c in zip(context, actions[:CONTEXT]):
        engine.append_frame(img, to_ctrl(c))
    frames, times = [], []
    for c in actions[CONTEXT:]:
        t0 = time.perf_counter()
        frames.append(engine.gen_frame(to_ctrl(c)).cpu())
        times.append(time.perf_counter() - t0)
    return torch.stack(frames), times


def drift(engine: WorldEngine, frames: int, n: int) -> dict:
    """``frames`` generated frames under the data policy's actions, per held-out episode."""
    total, tail = CONTEXT + frames, min(TAIL, frames)
    ep = episodes(SEEDS["drift"], n, total)
    actions = policy_actions(ep, total)
    gt, captions = render(ep, actions, [*range(CONTEXT), *range(total - tail, total)])
    per_episode, times = [], []
    for e in range(n):
        gen, t = long_rollout(engine, gt[e, :CONTEXT], actions[e], captions[e], seed=e)
        times += t
        m = drift_metrics(gen[-tail:], gt[e, CONTEXT:], reconstruct(engine, gt[e, CONTEXT:]))
        reference = max(sharpness(gt[e, CONTEXT:]), 1e-12)
        m["sharpness_ratio_per_window"] = [sharpness(gen[i:i + TAIL]) / reference for i in range(0, frames, TAIL)]
        per_episode.append(m)
    keys = ("sharpness_ratio", "ae_reconstruction_sharpness_ratio", "model_vs_ae_sharpness_ratio",
            "motion_ratio", "std_ratio")
    report: dict[str, Any] = {"frames": frames, "episodes": n, "tail": tail}
    report.update({k: float(np.mean([m[k] for m in per_episode])) for k in keys})
    report["still_moving"] = all(m["still_moving"] for m in per_episode)
    report["collapsed"] = any(m["collapsed"] for m in per_episode)
    report["gen_ms_median"] = 1e3 * float(np.median(times))
    report["per_episode"] = per_episode
    return report


# ----------------------------------------------------------------------------- 5. idle

def idle(engine: WorldEngine, n: int, frames: int) -> dict:
    """After a moving context, ``frames`` frames with no input: the simulator only animates (and
    coasts to a stop), so the model's picture should barely change either."""
    start = BURN_IN + CONTEXT
    ep = episodes(SEEDS["idle"], n, start + frames)
    policy = policy_actions(ep, start)
    actions = torch.cat((policy, torch.zeros(n, frames, policy.shape[-1])), dim=1)
    gt, captions = render(ep, actions, range(BURN_IN, start + frames))
    pooled, change_model, change_sim = PooledMSE(), [], []
    for e in range(n):
        context, future = gt[e, :CONTEXT], gt[e, CONTEXT:]
        gen = generate(engine, encode(engine, context), actions[e, BURN_IN:start], actions[e, start:],
                       captions[e], seed=e)
        change_model.append(motion(gen))
        change_sim.append(motion(future))
        pooled.add("model", gen[-1:], future[-1:])
        pooled.add("copy_last", context[-1:], future[-1:])
        pooled.add("ae_reconstruction", reconstruct(engine, future[-1:]), future[-1:])
    model, sim = float(np.mean(change_model)), float(np.mean(change_sim))
    return {"episodes": n, "frames": frames, "mean_abs_change_model": model, "mean_abs_change_simulator": sim,
            "change_ratio": ratio(model, sim), "psnr_last_frame": {k: v[0] for k, v in pooled.table().items()}}


# ----------------------------------------------------------------------------- 6. prompt

THEME_CELL = 8  # the autoencoder's downsampling: the finest detail a generated frame can keep


def colour_features(frames: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """Normalised joint RGB histograms ``[N, bins**3]`` of frames ``[N, H, W, 3]`` (values 0-255)."""
    n, cells = frames.shape[0], bins ** 3
    q = (frames.long() * bins // 256).clamp(0, bins - 1).flatten(1, 2)
    idx = q[..., 0] * bins * bins + q[..., 1] * bins + q[..., 2] + cells * torch.arange(n)[:, None]
    hist = torch.bincount(idx.flatten(), minlength=n * cells).view(n, cells).float()
    return hist / hist.sum(dim=1, keepdim=True)


def theme_features(frames: torch.Tensor, cell: int = THEME_CELL, bins: int = 4) -> torch.Tensor:
    """Colour features ``[N, bins**3 + 3 * H / cell]`` that depend only on each ``cell`` x ``cell``
    block's mean colour: the histogram of the block colours and the mean colour of each row of blocks
    (sky above, floor below).

    A histogram of full-resolution pixels reads blur as another theme (a blurred lava temple's dark reds
    fall into the stone dungeon's bins), so it scored the picture's sharpness a second time; every
    frame behind an f8 autoencoder is blurred at this scale, the simulator's through it too."""
    blocks = F.avg_pool2d(frames.float().permute(0, 3, 1, 2), cell)  # [N, 3, H / cell, W / cell]
    rows = blocks.mean(dim=3).flatten(1) / 255.0
    return torch.cat([colour_features(blocks.permute(0, 2, 3, 1), bins), rows], dim=1)


def train_theme_classifier(features: Callable[[torch.Tensor], torch.Tensor] = theme_features,
                           episodes_per_theme: int = 6, frames: int = 24) -> tuple[torch.nn.Module, float]:
    """Logistic regression on ``features`` of simulator frames (all modifiers); returns the
    classifier and its accuracy on simulator frames of other episodes."""
    n = episodes_per_theme * len(THEME_NAMES)
    ep = episodes(SEEDS["classifier"], 2 * n, frames)
    rgb, _ = render(ep, policy_actions(ep, frames), range(frames))
    x = features(rgb.flatten(0, 1))
    y = (torch.arange(2 * n) % len(THEME_NAMES))[:, None].expand(-1, frames).flatten()
    train, test = slice(0, n * frames), slice(n * frames, None)
    clf = torch.nn.Linear(x.shape[1], len(THEME_NAMES))
    for p in clf.parameters():  # the fit is convex: a zero start makes the report reproducible
        torch.nn.init.zeros_(p)
    opt = torch.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(500):  # full batch
        loss = F.cross_entropy(clf(x[train] * 10), y[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (clf(x[test] * 10).argmax(1) == y[test]).float().mean().item()
    return clf, acc


def prompt_episodes(per_theme: int) -> tuple[Episodes, list[str], torch.Tensor]:
    """``per_theme`` held-out-template captions per theme, each describing the look of its episode."""
    ep = episodes(SEEDS["prompt"], per_theme * len(THEME_NAMES), PROMPT_FRAMES)
    prompts = [make_caption(s.segments[0][1], np.random.default_rng([i, 7]), split="heldout")
               for i, s in enumerate(ep.specs)]
    labels = torch.arange(len(prompts)) % len(THEME_NAMES)
    return ep, prompts, labels


def prompt_following(engine: WorldEngine, per_theme: int, classifier_episodes: int) -> dict:
    """Theme accuracy of frames generated from an empty history for each prompt, and the simulator's
    accuracy under the same classifier on the same episodes: the classifier's own errors cancel out.
    Scored with ``theme_features``; ``full_resolution_histogram`` repeats the scores under the
    classifier of earlier reports (``colour_features``), which also counts blur against the model."""
    if engine.config.prompt_conditioning is None:
        return {"skipped": "this model takes no prompt"}
    ep, prompts, labels = prompt_episodes(per_theme)
    actions = policy_actions(ep, PROMPT_FRAMES)
    sim, _ = render(ep, actions, range(PROMPT_FRAMES - 4, PROMPT_FRAMES))
    gen = torch.stack([generate(engine, [], actions[i, :0], actions[i], p, seed=i)[-4:]
                       for i, p in enumerate(prompts)])
    recon = reconstruct(engine, sim)

    def scores(features: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        clf, clf_acc = train_theme_classifier(features, classifier_episodes)

        def hits(frames: torch.Tensor) -> torch.Tensor:  # [N, 4] bool
            with torch.no_grad():
                pred = clf(features(frames.flatten(0, 1)) * 10).argmax(1).view(frames.shape[:2])
            return pred == labels[:, None]

        model, simulator, oracle = hits(gen).float(), hits(sim).float(), hits(recon).float()
        acc, sim_acc, oracle_acc = model.mean().item(), simulator.mean().item(), oracle.mean().item()
        per = {t: {"model": model[labels == i].mean().item(), "simulator": simulator[labels == i].mean().item()}
               for i, t in enumerate(THEME_NAMES)}
        return {"accuracy": acc, "simulator_accuracy": sim_acc, "ratio_to_simulator": ratio(acc, sim_acc),
                "classifier_accuracy_on_sim": clf_acc,
                # the simulator's frames through the autoencoder: what a perfect dynamics model would score
                "oracle_accuracy": oracle_acc, "oracle_ratio_to_simulator": ratio(oracle_acc, sim_acc),
                "per_theme": per}

    return {"prompts": len(prompts), "classifier": f"{THEME_CELL}px-block colours", **scores(theme_features),
            "full_resolution_histogram": scores(colour_features), "examples": prompts[:len(THEME_NAMES)]}


# ----------------------------------------------------------------------------- pictures

def save_grid(path: Path, rows: list[torch.Tensor], labels: list[str], scale: int = 3) -> None:
    """Rows of frames ``[N, h, w, 3]`` side by side, upscaled, with a label left of each row."""
    grid = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0).numpy()
    img = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    margin, row_h = 90, img.height // len(rows)
    canvas = Image.new("RGB", (img.width + margin, img.height), "white")
    canvas.paste(img, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(labels):
        draw.text((4, i * row_h + row_h // 2 - 5), text, fill="black")
    canvas.save(path)


def save_rollouts(path: Path, gt: torch.Tensor, gen: torch.Tensor, n: int = 3) -> None:
    """rollout.png: per episode the simulator above and the model below; columns: horizons 1..8."""
    rows, labels = [], []
    for e in range(min(n, gt.shape[0])):
        rows += [gt[e], gen[e]]
        labels += [f"ep {e} simulator", f"ep {e} model"]
    save_grid(path, rows, labels)


def save_turns(path: Path, probes: dict, condition: str = "turn8") -> None:
    """turns.png: one probe state, last context frame then the +r and -r branches, simulator vs model."""
    names = probes["names"]
    k = names.index(condition) if condition in names else len(names) // 2
    last = probes["context"][0, -1:]
    rows = [torch.cat((last, probes[src][0, k, i])) for i in range(2) for src in ("gt", "gen")]
    sign = ("+", "-")
    save_grid(path, rows, [f"{sign[i]}{names[k]} {who}" for i in range(2) for who in ("simulator", "model")])


# ----------------------------------------------------------------------------- wall-time estimates

@dataclass
class Costs:
    """Seconds per unit of work, to estimate each section's wall time before it runs."""

    gen: float  # one gen_frame
    append: float  # one append_latent
    ae: float  # one encode + decode
    render: float  # one rendered 64x64 simulator frame
    world: float  # building one simulator episode (its map)
    policy: float  # one data-policy step of a batch


def time_each(fn: Callable[[], Any], n: int) -> float:
    """Seconds per call of ``fn``, after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


@torch.inference_mode()
def measure_costs(engine: WorldEngine, n: int = 6) -> Costs:
    """Time a few engine frames and a small simulator batch on this machine, at its current load."""
    img = torch.zeros(SIZE, SIZE, 3, dtype=torch.uint8)
    latent = engine.autoencoder.encode(img)
    engine.reset(seed=0)
    gen = time_each(lambda: engine.gen_frame(CtrlInput()), n)
    append = time_each(lambda: engine.append_latent(latent, CtrlInput()), n)
    ae = time_each(lambda: reconstruct(engine, img[None]), n)
    engine.reset(seed=0)
    t0 = time.perf_counter()
    ep = episodes(SEEDS["open_loop"], 4, CONTEXT)
    world = (time.perf_counter() - t0) / 4
    idle_ctrl = torch.zeros(4, CONTEXT, CTRL_DIM)
    render_frame = time_each(lambda: render(ep, idle_ctrl, range(CONTEXT)), 1) / (4 * CONTEXT)
    return Costs(gen, append, ae, render_frame, world, policy=3 * render_frame)


def section_work(s: Settings, n_conds: int) -> dict[str, dict[str, float]]:
    """Units of work per section (gen, append, ae, render, world, policy steps) for the estimates."""
    e, p, b = s.episodes, s.probes, s.probes * n_conds * 2
    d, i, q = s.drift_episodes, s.idle_episodes, s.theme_seeds * len(THEME_NAMES)
    c = s.classifier_episodes * len(THEME_NAMES) * 2
    return {
        "open_loop": dict(gen=3 * e * HORIZON, append=3 * e * CONTEXT, ae=e * (CONTEXT + 3 * HORIZON),
                          render=3 * e * (CONTEXT + HORIZON), world=4 * e, policy=BURN_IN + CONTEXT + HORIZON),
        "turn_probes": dict(gen=b * PROBE_FRAMES, append=b * CONTEXT, ae=p * CONTEXT + b * PROBE_FRAMES,
                            render=p * CONTEXT + b * PROBE_FRAMES, world=2 * p + b, policy=BURN_IN + CONTEXT),
        "drift": dict(gen=d * s.drift_frames, append=d * CONTEXT, ae=d * (CONTEXT + TAIL),
                      render=d * (CONTEXT + TAIL), world=2 * d, policy=s.drift_frames + CONTEXT),
        "idle": dict(gen=i * s.idle_frames, append=i * CONTEXT, ae=i * (CONTEXT + 1),
                     render=i * (CONTEXT + s.idle_frames), world=2 * i, policy=BURN_IN + CONTEXT),
        "prompt": dict(gen=q * PROMPT_FRAMES, render=q * 4 + c * 24, world=2 * q + 2 * c, policy=PROMPT_FRAMES + 24),
    }


def estimate_s(work: dict[str, float], costs: Costs) -> float:
    return sum(getattr(costs, unit) * amount for unit, amount in work.items())


def timed(name: str, estimate: float, walls: dict, fn: Callable[[], Any]) -> Any:
    """Run one section, printing its estimated and actual wall time."""
    print(f"[eval] {name}: estimated {estimate:.0f} s ...", flush=True)
    t0 = time.perf_counter()
    result = fn()
    walls[name] = {"estimated_s": round(estimate, 1), "wall_s": round(time.perf_counter() - t0, 1)}
    print(f"[eval] {name}: done in {walls[name]['wall_s']:.0f} s", flush=True)
    return result


# ----------------------------------------------------------------------------- report

def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def targets(report: dict) -> dict[str, bool]:
    """One boolean per target of the issue."""
    d, p, ol = report["drift"], report["prompt"], report["open_loop"]
    return {
        "turn_direction>=95%": report["turn_probes"]["accuracy"] >= 0.95,
        "mirrored_turn_delta_psnr_h8>=1.5dB": ol["delta_psnr_h8"]["model_mirrored"] >= 1.5,
        "psnr_h4>copy_last": report["psnr_h4"]["model"] > report["psnr_h4"]["copy_last"],
        "drift_sharpness>=0.5_moving_no_collapse": bool(d["sharpness_ratio"] >= 0.5 and d["still_moving"]
                                                       and not d["collapsed"]),
        "prompt_theme>=0.9_of_simulator": p.get("ratio_to_simulator", 0.0) >= 0.9,
        "fps_median>=20_1thread": report.get("fps_compiled", report["fps"])["fps_median"] >= 20,
        "shipped_size<=25MB": report["size_mb"] <= 25,
    }


def json_safe(obj: Any) -> Any:
    """Strict JSON: non-finite floats (e.g. the PSNR of identical frames) become null."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def measure_fps_one_thread(model: Path | None, frames: int, steps: int | None, compile: bool = False) -> dict:
    """``measure_fps`` on one thread (the target's condition), then restore the thread count."""
    threads = torch.get_num_threads()
    try:
        return measure_fps(model, frames=frames, threads=1, compile=compile, steps=steps or 0)
    finally:
        torch.set_num_threads(threads)


def evaluate(model: Path | None, out: Path, s: Settings | None = None) -> dict:
    """Run every section (see the module docstring) and write report.json, rollout.png, turns.png."""
    s = s or Settings()
    out.mkdir(parents=True, exist_ok=True)
    t0, walls = time.perf_counter(), {}
    engine = WorldEngine(model, device="cpu", seed=0)
    if s.steps is not None:
        engine.set_steps(s.steps)
    conds = probe_conditions(s.turn_rates, s.walk_turn_rate)
    costs = measure_costs(engine)
    work = section_work(s, len(conds))
    est = {name: estimate_s(w, costs) for name, w in work.items()}
    est["fps"] = 2.0 + (s.fps_frames + 20) * costs.gen  # + loading the model again
    print(f"[eval] {costs.gen * 1e3:.1f} ms per generated frame here: estimated total "
          f"{sum(est.values()) / 60:.1f} min", flush=True)
    report: dict[str, Any] = {"model": str(model or "embedded"), "model_folder": str(engine.folder),
                              "size_mb": folder_bytes(engine.folder) / MB, "steps": s.steps,
                              "denoise_steps": engine.n_steps, "ctrl_guidance": engine.config.ctrl_guidance,
                              "threads": torch.get_num_threads(),
                              "settings": dataclasses.asdict(s)}
    report["fps"] = timed("fps", est["fps"], walls, lambda: measure_fps_one_thread(model, s.fps_frames, s.steps))
    if s.compiled_fps:
        report["fps_compiled"] = timed("fps_compiled", est["fps"] + 180, walls,
                                       lambda: measure_fps_one_thread(model, s.fps_frames, s.steps, compile=True))
    report["open_loop"], gt, gen = timed("open_loop", est["open_loop"], walls, lambda: open_loop(engine, s.episodes))
    report["psnr_h4"] = {k: v[3] for k, v in report["open_loop"]["psnr"].items()}
    save_rollouts(out / "rollout.png", gt, gen)
    report["turn_probes"], probes = timed("turn_probes", est["turn_probes"], walls,
                                          lambda: turn_probes(engine, s.probes, conds))
    save_turns(out / "turns.png", probes)
    report["drift"] = timed("drift", est["drift"], walls, lambda: drift(engine, s.drift_frames, s.drift_episodes))
    report["idle"] = timed("idle", est["idle"], walls, lambda: idle(engine, s.idle_episodes, s.idle_frames))
    report["prompt"] = timed("prompt", est["prompt"], walls,
                             lambda: prompt_following(engine, s.theme_seeds, s.classifier_episodes))
    report["targets"] = targets(report)
    report["section_wall_s"] = walls
    report["eval_wall_s"] = time.perf_counter() - t0
    with open(out / "report.json", "w", encoding="utf-8") as f:
        json.dump(json_safe(report), f, indent=1, allow_nan=False)
    return report


def summary(r: dict) -> str:
    """A few lines a reader can check against the targets."""
    ol, tp, d, i, p = r["open_loop"], r["turn_probes"], r["drift"], r["idle"], r["prompt"]
    curve = lambda name: "/".join(f"{ol['psnr'][name][h]:.2f}" for h in (0, 3, 7))  # noqa: E731
    lines = [
        f"model {r['model']} ({r['size_mb']:.1f} MB, {r['denoise_steps']} denoise steps, "
        f"control guidance {r.get('ctrl_guidance', 1.0):g}); "
        f"fps median {r['fps']['fps_median']:.1f} on 1 thread"
        + (f" (compiled: {r['fps_compiled']['fps_median']:.1f})" if "fps_compiled" in r else ""),
        f"open loop PSNR@1/4/8 (pooled, {ol['episodes']} episodes): model {curve('model')}, "
        f"copy-last {curve('copy_last')}, AE {curve('ae_reconstruction')}",
        "ΔPSNR@8 shuffled: model {model_shuffled:.2f} oracle {oracle_shuffled:.2f}; "
        "mirrored: model {model_mirrored:.2f} oracle {oracle_mirrored:.2f} dB".format(**ol["delta_psnr_h8"])
        + " (standard errors, jackknife over episodes: shuffled {model_shuffled:.2f}, mirrored "
          "{model_mirrored:.2f})".format(**ol["se"]),
        f"turn direction {tp['accuracy']:.1%} ± {tp['accuracy_se']:.1%} ("
        + ", ".join(f"{k} {v:.0%}" for k, v in tp["per_rate"].items())
        + f"); oracle {tp['oracle_accuracy']:.1%}; shift-sign {tp['shift_sign_agreement']:.1%}",
        f"drift {d['frames']}: sharpness {d['sharpness_ratio']:.3f} of GT "
        f"(AE {d['ae_reconstruction_sharpness_ratio']:.3f}), motion {d['motion_ratio']:.2f}, "
        f"std {d['std_ratio']:.2f}, collapsed {d['collapsed']}",
        f"idle: change model {i['mean_abs_change_model']:.2f} vs simulator {i['mean_abs_change_simulator']:.2f}; "
        f"last-frame PSNR {i['psnr_last_frame']['model']:.2f} dB",
        (f"prompt: model {p['accuracy']:.1%}, simulator {p['simulator_accuracy']:.1%}, "
         f"ratio {p['ratio_to_simulator']:.2f}; through the AE {p['oracle_ratio_to_simulator']:.2f} "
         f"(full-resolution histogram: ratio {p['full_resolution_histogram']['ratio_to_simulator']:.2f})")
        if "accuracy" in p else f"prompt: {p.get('skipped')}",
        "targets: " + ", ".join(f"{k} {'PASS' if v else 'fail'}" for k, v in r["targets"].items()),
        "wall: " + ", ".join(f"{k} {v['wall_s']:.0f}s (est {v['estimated_s']:.0f})"
                             for k, v in r["section_wall_s"].items()) + f"; total {r['eval_wall_s']:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m training eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--out", type=Path, default=Path("docs/eval"))
    parser.add_argument("--episodes", type=int, default=defaults.episodes, help="open-loop episodes")
    parser.add_argument("--probes", type=int, default=defaults.probes, help="turn-probe states")
    parser.add_argument("--turn-rates", type=float, nargs="+", default=list(defaults.turn_rates))
    parser.add_argument("--walk-turn-rate", type=float, default=defaults.walk_turn_rate, help="0 disables")
    parser.add_argument("--drift-frames", type=int, default=defaults.drift_frames)
    parser.add_argument("--drift-episodes", type=int, default=defaults.drift_episodes)
    parser.add_argument("--idle-episodes", type=int, default=defaults.idle_episodes)
    parser.add_argument("--idle-frames", type=int, default=defaults.idle_frames)
    parser.add_argument("--theme-seeds", type=int, default=defaults.theme_seeds, help="held-out captions per theme")
    parser.add_argument("--classifier-episodes", type=int, default=defaults.classifier_episodes)
    parser.add_argument("--fps-frames", type=int, default=defaults.fps_frames)
    parser.add_argument("--steps", type=int, default=None, help="engine.set_steps(N) for every rollout")
    parser.add_argument("--compiled-fps", action="store_true",
                        help="also time the app's compiled CPU path; the fps target then uses it")
    a = parser.parse_args(argv)
    settings = Settings(a.episodes, a.probes, tuple(a.turn_rates), a.walk_turn_rate, a.drift_frames,
                        a.drift_episodes, a.idle_episodes, a.idle_frames, a.theme_seeds,
                        a.classifier_episodes, a.fps_frames, a.steps, a.compiled_fps)
    print(summary(evaluate(a.model, a.out, settings)))
