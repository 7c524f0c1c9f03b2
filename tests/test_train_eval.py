"""Evaluation helpers: they must measure what they claim (shift sign, PSNR, sharpness, features)."""

from __future__ import annotations

import torch

from training.evaluate import colour_features, horizontal_shift, psnr, sharpness, to_ctrl


def test_horizontal_shift_sign_and_size():
    torch.manual_seed(0)
    img = (torch.rand(64, 64, 3) * 255).to(torch.uint8)
    assert horizontal_shift(img, img.roll(3, dims=1)) == 3
    assert horizontal_shift(img, img.roll(-5, dims=1)) == -5
    assert horizontal_shift(img, img) == 0


def test_psnr_and_sharpness():
    a = torch.full((8, 8, 3), 100, dtype=torch.uint8)
    assert psnr(a, a) > 90
    assert abs(psnr(a, a + 10) - 20 * torch.log10(torch.tensor(255 / 10)).item()) < 1e-3
    noise = (torch.rand(2, 32, 32, 3) * 255).to(torch.uint8)
    flat = torch.full((2, 32, 32, 3), 128, dtype=torch.uint8)
    assert sharpness(noise) > 100 * max(sharpness(flat), 1e-9)


def test_colour_features_and_ctrl_conversion():
    red = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    red[..., 0] = 255
    f = colour_features(red)
    assert f.shape == (1, 64) and f[0, 48] == 1.0
    vec = torch.zeros(259)
    vec[0], vec[2 + 87], vec[2 + 0x10] = 4.0, 1.0, 1.0
    ctrl = to_ctrl(vec)
    assert ctrl.button == {87, 0x10} and ctrl.mouse == (4.0, 0.0)


def test_evaluation_runs_end_to_end_and_writes_its_report(tmp_path):
    """A tiny evaluation of the shipped model: every metric and the picture are written."""
    import json

    from PIL import Image

    from training import evaluate

    evaluate.main(["--out", str(tmp_path), "--episodes", "2", "--drift-frames", "20", "--probes", "1",
                   "--theme-seeds", "1"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["targets"]) == {"fps_median>=20", "psnr_h4>copy_last", "delta_psnr_h8>=1.5dB",
                                      "turn_direction>=95%", "sharpness_ratio>=0.5", "theme_accuracy>=80%"}
    assert 5 < report["psnr_h4"]["model"] < 60 and report["psnr_h4"]["ae_reconstruction"] > 5
    strip = Image.open(tmp_path / "rollout.png")
    assert strip.width >= 64 and strip.height >= 128
