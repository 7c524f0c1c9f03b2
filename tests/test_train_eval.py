"""Evaluation helpers must measure what they claim: pooled PSNR, nearer-branch turn decisions, mirrored
actions, drift collapse, image shift, sharpness, colour and theme features; and the whole evaluation runs on a tiny
model and writes every part of its report."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from training import evaluate
from training.evaluate import (PooledMSE, branch_decisions, colour_features, drift_metrics, horizontal_shift,
                               mirror_actions, psnr, render, share, sharpness, theme_features, to_ctrl)
from world_engine.controls import VK


def noise(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) * 255).to(torch.uint8)


def test_pooled_psnr_comes_from_the_pooled_mse_not_a_mean_of_psnrs():
    """One static window (0 error) and one with an error of 10 grey levels: a mean of per-frame PSNRs is
    infinite (or, capped at 100 dB, 64 dB); the pooled MSE is half the second one's, i.e. +3.01 dB."""
    target = torch.full((2, 8, 8, 3), 100, dtype=torch.uint8)  # horizons 1 and 2
    off = target.clone()
    off[0] += 10
    off[1] += 20
    pooled = PooledMSE()
    pooled.add("model", target, target)
    pooled.add("model", off, target)
    h1, h2 = pooled.psnr("model")
    single = 20 * math.log10(255 / 10)
    assert abs(psnr(off[0], target[0]) - single) < 1e-6
    assert abs(h1 - (single + 10 * math.log10(2))) < 1e-6
    assert abs(h2 - (20 * math.log10(255 / 20) + 10 * math.log10(2))) < 1e-6  # horizons pool separately
    assert psnr(target, target) == math.inf  # no cap


def test_nearer_branch_decision_rewards_only_a_model_that_follows_the_sign():
    img = noise(16, 16, 3)
    gt = torch.stack([img.roll(-2, dims=1), img.roll(2, dims=1)])[:, None]  # [2 branches, 1 frame, ...]
    wobble = (gt.int() + torch.randint(-3, 4, gt.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 255)
    correct, valid = branch_decisions(wobble.to(torch.uint8), gt)
    assert correct.all() and valid.all()
    ignores_sign = gt[:1].expand_as(gt)  # both branches show the +r frame
    correct, valid = branch_decisions(ignores_sign, gt)
    assert correct.tolist() == [[True], [False]] and share(correct, valid) == 0.5
    same = img[None, None].expand(2, 1, -1, -1, -1)  # identical simulator branches: undecidable
    correct, valid = branch_decisions(same, same)
    assert not valid.any() and math.isnan(share(correct, valid))


def test_mirrored_actions_negate_dx_and_swap_a_d_and_the_arrows():
    vec = torch.zeros(2, 259)
    vec[:, 0], vec[:, 1] = 4.0, 2.0
    vec[0, 2 + VK["A"]] = vec[0, 2 + VK["W"]] = vec[1, 2 + VK["LEFT"]] = 1.0
    m = mirror_actions(vec)
    assert m[:, 0].tolist() == [-4.0, -4.0] and m[:, 1].tolist() == [2.0, 2.0]
    assert to_ctrl(m[0]).button == {VK["D"], VK["W"]} and to_ctrl(m[1]).button == {VK["RIGHT"]}
    assert torch.equal(mirror_actions(m), vec) and torch.equal(vec[0, 2 + VK["A"]], torch.tensor(1.0))


def test_drift_metrics_flag_a_frozen_grey_picture_and_pass_the_truth():
    gt = noise(20, 16, 16, 3)
    healthy = drift_metrics(gt, gt, gt)
    assert healthy["sharpness_ratio"] == 1.0 and healthy["motion_ratio"] == 1.0
    assert healthy["still_moving"] and not healthy["collapsed"]
    frozen = drift_metrics(gt[:1].expand_as(gt), gt, gt)  # sharp but never moves
    assert frozen["motion_ratio"] == 0.0 and frozen["collapsed"] and not frozen["still_moving"]
    grey = drift_metrics(torch.full_like(gt, 128), gt, gt)
    assert grey["std_ratio"] == 0.0 and grey["collapsed"] and grey["sharpness_ratio"] < 1e-6


def test_horizontal_shift_sign_and_size():
    img = noise(64, 64, 3)
    assert horizontal_shift(img, img.roll(3, dims=1)) == 3
    assert horizontal_shift(img, img.roll(-5, dims=1)) == -5
    assert horizontal_shift(img, img) == 0


def test_sharpness_colour_features_and_ctrl_conversion():
    flat = torch.full((2, 32, 32, 3), 128, dtype=torch.uint8)
    assert sharpness(noise(2, 32, 32, 3)) > 100 * max(sharpness(flat), 1e-9)
    red = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    red[..., 0] = 255
    f = colour_features(red)
    assert f.shape == (1, 64) and f[0, 48] == 1.0
    vec = torch.zeros(259)
    vec[0], vec[2 + 87], vec[2 + 0x10] = 4.0, 1.0, 1.0
    ctrl = to_ctrl(vec)
    assert ctrl.button == {87, 0x10} and ctrl.mouse == (4.0, 0.0)


def test_theme_features_see_block_colours_only_so_blur_is_not_a_theme():
    """Averaging every 8x8 block (the autoencoder's cell) changes the full-resolution histogram but not
    the theme features; turning the frame upside down (the same colours in other rows) changes them."""
    frame = noise(1, 64, 64, 3).float()
    blurred = F.avg_pool2d(frame.permute(0, 3, 1, 2), 8).repeat_interleave(8, 2).repeat_interleave(8, 3)
    blurred = blurred.permute(0, 2, 3, 1)
    assert torch.equal(theme_features(frame), theme_features(blurred))
    assert theme_features(frame).shape == (1, 64 + 3 * 8)
    assert not torch.equal(colour_features(frame), colour_features(blurred))
    flipped = frame.flip(1)  # upside down: the same colours, in other rows
    assert not torch.equal(theme_features(frame), theme_features(flipped))


def test_policy_and_render_on_shared_maps_match_the_simulator_rollout(one_thread):
    """Prebuilt maps shared between copies, and fast-forwarding through physics alone, give the
    simulator's own actions and frames."""
    from simulator import policy_actions, rollout

    ep = evaluate.episodes(123, 2, 6)
    actions = evaluate.policy_actions(ep, 6)
    assert torch.equal(actions, policy_actions(ep.specs, 6))
    full = torch.stack([s["rgb"] for s in rollout(ep.specs, actions, size=64)], 1)
    some, captions = render(ep.repeat(2), actions.repeat_interleave(2, 0), [2, 5])
    assert torch.equal(some, full.repeat_interleave(2, 0)[:, [2, 5]]) and len(captions) == 4
    assert not torch.equal(full[:, 2], full[:, 5])  # the episodes move


@pytest.fixture(scope="module")
def tiny_prompted_model(tmp_path_factory):
    """A random 64x64 model with the tiny autoencoder and the embedded prompt encoder."""
    from bench.random_checkpoint import write_random_checkpoint
    from world_engine.engine import EMBEDDED_MODEL

    return write_random_checkpoint(tmp_path_factory.mktemp("tiny") / "model", autoencoder="tiny",
                                   prompt_conditioning="cross_attention", prompt_embedding_dim=128,
                                   prompt_conditioning_period=2,
                                   prompt_encoder_uri=str(EMBEDDED_MODEL / "text_encoder"))


def test_evaluation_runs_end_to_end_and_writes_every_part_of_its_report(tiny_prompted_model, tmp_path, one_thread):
    from PIL import Image

    evaluate.main(["--model", str(tiny_prompted_model), "--out", str(tmp_path), "--episodes", "2",
                   "--probes", "2", "--turn-rates", "8", "--walk-turn-rate", "4", "--drift-frames", "6",
                   "--drift-episodes", "1", "--idle-episodes", "1", "--idle-frames", "3", "--theme-seeds", "1",
                   "--classifier-episodes", "1", "--fps-frames", "2", "--steps", "1"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) >= {"fps", "open_loop", "psnr_h4", "turn_probes", "drift", "idle", "prompt", "targets",
                           "size_mb", "steps", "denoise_steps", "section_wall_s", "eval_wall_s"}
    assert report["steps"] == 1 and report["denoise_steps"] == 1 and report["ctrl_guidance"] == 1.0
    assert set(report["targets"]) == {
        "turn_direction>=95%", "mirrored_turn_delta_psnr_h8>=1.5dB", "psnr_h4>copy_last",
        "drift_sharpness>=0.5_moving_no_collapse", "prompt_theme>=0.9_of_simulator", "fps_median>=20_1thread",
        "shipped_size<=25MB"}
    assert report["targets"]["shipped_size<=25MB"] and 0 < report["size_mb"] < 25
    ol = report["open_loop"]
    assert set(ol["psnr"]) == {"model", "model_shuffled", "model_mirrored", "copy_last", "ae_reconstruction",
                               "oracle_shuffled", "oracle_mirrored", "simulator_shuffled", "simulator_mirrored"}
    assert all(len(v) == 8 for v in ol["psnr"].values()) and 5 < report["psnr_h4"]["model"] < 60
    assert set(ol["delta_psnr_h8"]) == {"model_shuffled", "oracle_shuffled", "model_mirrored", "oracle_mirrored"}
    assert set(ol["se"]) == {"psnr_h4_model", "psnr_h8_model", "model_shuffled", "model_mirrored"}
    assert all(v is None or v >= 0 for v in ol["se"].values())
    mse = ol["per_episode_mse"]  # the pooled PSNR is recomputed from the per-episode errors kept for pairing
    assert set(mse) == {"model", "model_shuffled", "model_mirrored"} and len(mse["model"]) == 2
    assert evaluate.pooled_psnr(mse["model"]) == pytest.approx(ol["psnr"]["model"])
    tp = report["turn_probes"]
    assert tp["decisions"] == 2 * 2 * 2 * 4 and set(tp["per_rate"]) == {"turn8", "walk_turn4"}
    assert len(tp["per_horizon"]) == 4 and 0 <= tp["accuracy"] <= 1 and 0 <= tp["oracle_accuracy"] <= 1
    assert sum(tp["per_state_valid"]) == tp["decisions"] and len(tp["per_state_correct"]) == 2
    assert sum(tp["per_state_correct"]) / tp["decisions"] == pytest.approx(tp["accuracy"]) and tp["accuracy_se"] >= 0
    assert 0 <= tp["accuracy_vs_ae_references"] <= 1 and set(tp["branch_gap_psnr"]) == set(tp["per_rate"])
    assert {"sharpness_ratio", "motion_ratio", "std_ratio", "still_moving", "collapsed"} <= set(report["drift"])
    assert {"mean_abs_change_model", "mean_abs_change_simulator", "psnr_last_frame"} <= set(report["idle"])
    p = report["prompt"]
    assert p["prompts"] == 8 and set(p["per_theme"]) == set(evaluate.THEME_NAMES) and p["simulator_accuracy"] > 0
    assert p["classifier_accuracy_on_sim"] > 0.3  # chance is 0.125: the classifier was fitted
    assert p["oracle_ratio_to_simulator"] == pytest.approx(p["oracle_accuracy"] / p["simulator_accuracy"])
    assert p["classifier"] == "8px-block colours" and p["full_resolution_histogram"]["simulator_accuracy"] > 0
    assert set(p["full_resolution_histogram"]["per_theme"]) == set(evaluate.THEME_NAMES)
    assert set(report["section_wall_s"]) == {"fps", "open_loop", "turn_probes", "drift", "idle", "prompt"}
    rollout_png, turns_png = Image.open(tmp_path / "rollout.png"), Image.open(tmp_path / "turns.png")
    assert rollout_png.width > 8 * 64 and rollout_png.height >= 6 * 64
    assert turns_png.width > 5 * 64 and turns_png.height >= 4 * 64
