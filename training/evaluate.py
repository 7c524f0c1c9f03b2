"""Evaluate a model folder against the simulator (same seeds, same actions); recipe §4.4.

Metrics, each against its issue target:
  * ``fps``: end-to-end ``gen_frame`` speed on 2 threads (see ``fps.py``);
  * open-loop PSNR at horizons 1..8 from 8 ground-truth context frames (after a burn-in, so the
    windows contain motion), against copying the last
    context frame and against the autoencoder's reconstruction (the ceiling);
  * delta-PSNR at horizon 8: true actions minus actions shuffled across episodes;
  * turn-in-place probes: the sign of the horizontal image shift (phase correlation) of generated
    frames under a constant mouse turn must match the simulator's;
  * drift: Laplacian-variance sharpness of the last 100 of a long rollout, relative to ground truth
    (and, to separate the autoencoder's blur from collapse, relative to its reconstructions);
  * prompt following: a colour-histogram theme classifier (trained on simulator frames) applied to
    frames generated from an empty history for prompts that name each of the 8 themes (held-out
    caption templates).
Writes ``report.json`` and ``rollout.png`` (ground truth above, model below) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from world_engine.controls import CtrlInput
from world_engine.engine import WorldEngine
from simulator.captions import make_caption
from simulator.themes import THEME_NAMES, Look
from simulator import EpisodeSpec, policy_actions
from simulator import rollout as simulate
from .fps import measure_fps

EVAL_SEED = 10_000_000  # far from the training seeds
CONTEXT = 8
BURN_IN = 24  # open-loop windows start this far into an episode, once the policy is moving


def to_ctrl(vec: torch.Tensor) -> CtrlInput:
    buttons = {int(i) for i in torch.nonzero(vec[2:-1]).flatten()}
    return CtrlInput(button=buttons, mouse=(float(vec[0]), float(vec[1])))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float() / 255, b.float() / 255).item()
    return 10 * float(np.log10(1 / max(mse, 1e-10)))


def sharpness(frames: torch.Tensor) -> float:
    """Mean variance of the Laplacian of grey frames ``[N, H, W, 3]`` uint8."""
    grey = frames.float().mean(dim=-1, keepdim=True).permute(0, 3, 1, 2) / 255
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(grey, kernel).var(dim=(1, 2, 3)).mean().item()


def horizontal_shift(a: torch.Tensor, b: torch.Tensor) -> float:
    """Horizontal shift (pixels, + = content moved right) from frame ``a`` to ``b``, by phase correlation."""
    ga, gb = (x.float().mean(dim=-1) for x in (a, b))
    fa, fb = torch.fft.rfft2(ga - ga.mean()), torch.fft.rfft2(gb - gb.mean())
    cross = fb * fa.conj()
    corr = torch.fft.irfft2(cross / cross.abs().clamp_min(1e-8), s=ga.shape).sum(dim=0)
    shift = int(corr.argmax())
    return float(shift if shift <= ga.shape[1] // 2 else shift - ga.shape[1])


def render(seeds: list[int], frames: int, ctrl: torch.Tensor | None = None,
           looks: list[Look] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Ground truth ``(rgb [B, T, 64, 64, 3], ctrl [B, T, D], first captions)`` under the data policy
    (or the given ``ctrl [B, T, D]``)."""
    specs = [EpisodeSpec.from_seed(s, n_frames=frames, switch_probability=0.0,
                                   theme=THEME_NAMES[i % len(THEME_NAMES)]) for i, s in enumerate(seeds)]
    if looks is not None:
        specs = [EpisodeSpec(s.seed, [(0, look)], frames) for s, look in zip(specs, looks)]
    steps = list(simulate(specs, ctrl, size=64, n_frames=frames))
    return (torch.stack([s["rgb"] for s in steps], 1), torch.stack([s["ctrl"] for s in steps], 1),
            steps[0]["caption"])


def rollout(engine: WorldEngine, context: torch.Tensor, ctrl: torch.Tensor, prompt: str, horizon: int) -> torch.Tensor:
    """Append ``CONTEXT`` ground-truth frames, then generate ``horizon`` frames under ``ctrl``."""
    engine.reset()
    engine.set_prompt(prompt)
    for t in range(CONTEXT):
        engine.append_frame(context[t], to_ctrl(ctrl[t]))
    return torch.stack([engine.gen_frame(to_ctrl(ctrl[CONTEXT + h])) for h in range(horizon)])


def open_loop(engine: WorldEngine, episodes: int, horizon: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    seeds = [EVAL_SEED + i for i in range(episodes)]
    gt, ctrl, captions = render(seeds, BURN_IN + CONTEXT + horizon)
    gt, ctrl = gt[:, BURN_IN:], ctrl[:, BURN_IN:]
    shuffled = ctrl.roll(1, dims=0)  # another episode's actions
    ae = engine.autoencoder
    res: dict[str, list[list[float]]] = {"model": [], "shuffled_actions": [], "copy_last": [], "ae_reconstruction": []}
    gens = []
    for e in range(episodes):
        gen = rollout(engine, gt[e], ctrl[e], captions[e], horizon)
        gen_shuffled = rollout(engine, gt[e], torch.cat((ctrl[e, :CONTEXT], shuffled[e, CONTEXT:])),
                               captions[e], horizon)
        future = gt[e, CONTEXT:]
        res["model"].append([psnr(gen[h], future[h]) for h in range(horizon)])
        res["shuffled_actions"].append([psnr(gen_shuffled[h], future[h]) for h in range(horizon)])
        res["copy_last"].append([psnr(gt[e, CONTEXT - 1], future[h]) for h in range(horizon)])
        res["ae_reconstruction"].append([psnr(ae.decode(ae.encode(future[h])), future[h]) for h in range(horizon)])
        gens.append(gen)
    mean = {k: np.mean(v, axis=0).tolist() for k, v in res.items()}
    return mean, gt[:, CONTEXT:], torch.stack(gens)


def turn_probes(engine: WorldEngine, n: int, frames: int = 6) -> dict:
    """Stand still and turn at a constant rate, both ways; compare the image-shift sign with the simulator's."""
    seeds = [EVAL_SEED + 500 + i for i in range(n)]
    ctx_gt, ctx_ctrl, captions = render(seeds, CONTEXT)
    agree, total, shifts = 0, 0, []
    for sign in (1.0, -1.0):
        ctrl = torch.zeros(n, CONTEXT + frames, ctx_ctrl.shape[-1])
        ctrl[:, :CONTEXT] = ctx_ctrl
        ctrl[:, CONTEXT:, 0] = 8.0 * sign
        gt, _, _ = render(seeds, CONTEXT + frames, ctrl=ctrl)
        for e in range(n):
            gen = rollout(engine, gt[e], ctrl[e], captions[e], frames)
            seq_gen = torch.cat((gt[e, CONTEXT - 1:CONTEXT], gen))
            seq_gt = gt[e, CONTEXT - 1:]
            s_gen = sum(horizontal_shift(a, b) for a, b in zip(seq_gen, seq_gen[1:]))
            s_gt = sum(horizontal_shift(a, b) for a, b in zip(seq_gt, seq_gt[1:]))
            agree += int(np.sign(s_gen) == np.sign(s_gt) and s_gt != 0)
            total += 1
            shifts.append({"mouse_dx": 8.0 * sign, "shift_gen_px": s_gen, "shift_gt_px": s_gt})
    return {"accuracy": agree / total, "probes": total, "shifts": shifts}


def drift(engine: WorldEngine, frames: int) -> dict:
    seed = EVAL_SEED + 900
    gt, ctrl, captions = render([seed], frames + CONTEXT)
    engine.reset()
    engine.set_prompt(captions[0])
    for t in range(CONTEXT):
        engine.append_frame(gt[0, t], to_ctrl(ctrl[0, t]))
    tail = []
    for t in range(CONTEXT, CONTEXT + frames):
        img = engine.gen_frame(to_ctrl(ctrl[0, t]))
        if t >= CONTEXT + frames - 100:
            tail.append(img)
    ae = engine.autoencoder
    gt_tail = gt[0, -100:]
    recon = torch.stack([ae.decode(ae.encode(img)) for img in gt_tail])
    reference = max(sharpness(gt_tail), 1e-12)
    return {"frames": frames, "sharpness_ratio_last100": sharpness(torch.stack(tail)) / reference,
            "ae_reconstruction_sharpness_ratio": sharpness(recon) / reference,
            "model_vs_ae_sharpness_ratio": sharpness(torch.stack(tail)) / max(sharpness(recon), 1e-12)}


def colour_features(frames: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """Normalised joint RGB histograms ``[N, bins**3]`` of uint8 frames ``[N, H, W, 3]``."""
    q = (frames.long() * bins // 256).flatten(1, 2)
    idx = q[..., 0] * bins * bins + q[..., 1] * bins + q[..., 2]
    hist = torch.zeros(frames.shape[0], bins ** 3).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float))
    return hist / hist.sum(dim=1, keepdim=True)


def train_theme_classifier(episodes_per_theme: int = 6, frames: int = 24) -> tuple[torch.nn.Module, float]:
    """Logistic regression on colour histograms of simulator frames (all modifiers); returns
    the classifier and its held-out accuracy on fresh simulator frames."""
    n = episodes_per_theme * len(THEME_NAMES)
    rgb, _, _ = render([EVAL_SEED + 2000 + i for i in range(2 * n)], frames)
    labels = torch.arange(2 * n) % len(THEME_NAMES)
    x = colour_features(rgb.flatten(0, 1))
    y = labels[:, None].expand(-1, frames).flatten()
    train, test = slice(0, n * frames), slice(n * frames, None)
    clf = torch.nn.Linear(x.shape[1], len(THEME_NAMES))
    opt = torch.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(500):
        loss = F.cross_entropy(clf(x[train] * 10), y[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (clf(x[test] * 10).argmax(1) == y[test]).float().mean().item()
    return clf, acc


def prompt_following(engine: WorldEngine, seeds_per_theme: int, frames: int = 16) -> dict:
    clf, clf_acc = train_theme_classifier()
    correct, total, per_theme = 0, 0, {}
    specs = [EpisodeSpec.from_seed(EVAL_SEED + 3000 + i, n_frames=frames)
             for i in range(len(THEME_NAMES) * seeds_per_theme)]
    ctrls = policy_actions(specs, n_frames=frames)
    for ti, theme in enumerate(THEME_NAMES):
        hits = 0
        for s in range(seeds_per_theme):
            g = np.random.default_rng([ti, s])
            prompt = make_caption(Look(theme), g, split="heldout")
            engine.reset(seed=s)
            engine.set_prompt(prompt)
            imgs = [engine.gen_frame(to_ctrl(c)) for c in ctrls[ti * seeds_per_theme + s]]
            with torch.no_grad():
                pred = clf(colour_features(torch.stack(imgs[-4:])) * 10).argmax(1)
            hits += int((pred == ti).sum())
            total += len(pred)
        per_theme[theme] = hits / (seeds_per_theme * 4)
        correct += hits
    return {"accuracy": correct / total, "per_theme": per_theme, "classifier_accuracy_on_sim": clf_acc}


def save_strip(path: Path, gt: torch.Tensor, gen: torch.Tensor, episodes: int = 3) -> None:
    """Rows: per episode ground truth above, model below; columns: horizons 1..H."""
    rows = []
    for e in range(min(episodes, gt.shape[0])):
        rows += [torch.cat(list(gt[e]), dim=1), torch.cat(list(gen[e]), dim=1)]
    Image.fromarray(torch.cat(rows, dim=0).numpy()).resize(
        (rows[0].shape[1] * 2, len(rows) * rows[0].shape[0] * 2), Image.NEAREST).save(path)


def evaluate(model: Path | None, out: Path, episodes: int, drift_frames: int, probes: int, theme_seeds: int) -> dict:
    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report: dict = {"model": str(model or "embedded")}
    report["fps"] = measure_fps(model, frames=200)
    engine = WorldEngine(model, device="cpu", seed=0)
    psnrs, gt, gen = open_loop(engine, episodes, horizon=8)
    save_strip(out / "rollout.png", gt, gen)
    report["open_loop_psnr"] = psnrs
    report["psnr_h4"] = {k: v[3] for k, v in psnrs.items()}
    report["delta_psnr_h8_true_minus_shuffled"] = psnrs["model"][7] - psnrs["shuffled_actions"][7]
    report["turn_probes"] = turn_probes(engine, probes)
    report["drift"] = drift(engine, drift_frames)
    report["prompt"] = prompt_following(engine, theme_seeds)
    report["targets"] = {
        "fps_median>=20": report["fps"]["fps_median"] >= 20,
        "psnr_h4>copy_last": report["psnr_h4"]["model"] > report["psnr_h4"]["copy_last"],
        "delta_psnr_h8>=1.5dB": report["delta_psnr_h8_true_minus_shuffled"] >= 1.5,
        "turn_direction>=95%": report["turn_probes"]["accuracy"] >= 0.95,
        "sharpness_ratio>=0.5": report["drift"]["sharpness_ratio_last100"] >= 0.5,
        "theme_accuracy>=80%": report["prompt"]["accuracy"] >= 0.8,
    }
    report["eval_wall_s"] = time.time() - t0
    with open(out / "report.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training eval", description=__doc__)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--out", type=Path, default=Path("docs/eval"))
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--drift-frames", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=8, help="turn probes per direction")
    parser.add_argument("--theme-seeds", type=int, default=2)
    args = parser.parse_args(argv)
    report = evaluate(args.model, args.out, args.episodes, args.drift_frames, args.probes, args.theme_seeds)
    print(json.dumps({k: report[k] for k in ("psnr_h4", "delta_psnr_h8_true_minus_shuffled", "targets")}, indent=1))
