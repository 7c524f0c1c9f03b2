"""``python -m training compare``: the paired error of a difference between two reports cancels the
scene-to-scene spread both models share, and reports that do not see the same held-out units are refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training import compare
from training.evaluate import jackknife_se, pooled_psnr

SETTINGS = {"episodes": 6, "probes": 4, "turn_rates": [8.0], "walk_turn_rate": 0.0, "fps_frames": 100}


def report(name: str, mse: np.ndarray, mirrored: np.ndarray, correct: list[int], valid: list[int]) -> dict:
    """A report with just what ``compare`` reads; ``mse`` and ``mirrored`` are ``[episodes, 8]``."""
    return {"model": name, "settings": dict(SETTINGS),
            "open_loop": {"episodes": len(mse), "per_episode_mse": {
                "model": mse.tolist(), "model_mirrored": mirrored.tolist(), "model_shuffled": mirrored.tolist()}},
            "turn_probes": {"states": len(correct), "per_state_correct": correct, "per_state_valid": valid},
            "drift": {"sharpness_ratio": 0.1}, "idle": {"mean_abs_change_model": 3.0, "mean_abs_change_simulator": 2.5},
            "prompt": {"ratio_to_simulator": 0.5}, "fps": {"fps_median": 40.0}}


def scenes(seed: int = 0) -> np.ndarray:
    """Per-episode MSE that varies tenfold from scene to scene, as held-out episodes do."""
    rng = np.random.default_rng(seed)
    return np.outer(10 ** rng.uniform(-3, -2, 6), np.linspace(1, 2, 8))


def test_jackknife_standard_error_of_a_mean_is_the_sample_standard_error():
    x = np.random.default_rng(1).normal(size=9)
    assert jackknife_se(lambda i: x[i].mean(), len(x)) == pytest.approx(x.std(ddof=1) / 3)
    assert math.isnan(jackknife_se(lambda i: x[i].mean(), 1))


def test_paired_error_cancels_the_spread_of_scenes_both_models_share():
    """B's error is A's times 1.2, give or take 2%, on every scene: the PSNR gap is ~0.79 dB (within
    0.15 dB of jitter) and the paired error is a small fraction of it, while either model's own
    jackknife error over these scenes is larger than the gap."""
    base = scenes()
    jitter = 1 + 0.02 * np.random.default_rng(2).standard_normal(base.shape)
    a = report("A", base, base * 1.5, [7, 8, 6, 8], [8, 8, 8, 8])
    b = report("B", base * 1.2 * jitter, base * 1.5, [6, 8, 6, 8], [8, 8, 8, 8])
    rows = compare.compare(a, b)
    psnr4 = rows["PSNR@4"]
    assert psnr4["diff"] == pytest.approx(10 * math.log10(1.2), abs=0.15)
    own_se = jackknife_se(lambda i: pooled_psnr(base[i])[3], 6)
    assert own_se > psnr4["diff"] > 10 * psnr4["se"] > 0 and psnr4["z"] > 10
    turn = rows["turn direction (%)"]  # one decision of 32 more for A, all in one state
    assert turn["diff"] == pytest.approx(100 / 32) and turn["units"] == 4
    extra = np.array([1, 0, 0, 0])  # A's surplus of correct decisions per state, of 8 each
    assert turn["se"] == pytest.approx(jackknife_se(lambda i: 100 * extra[i].sum() / (8 * len(i)), 4))
    assert rows["mirrored ΔPSNR@8"]["diff"] == pytest.approx(rows["PSNR@8"]["diff"])  # same mirrored error
    assert rows["idle change (simulator 2.50)"] == {"a": 3.0, "b": 3.0, "diff": 0.0}


def test_compare_refuses_reports_that_do_not_pair(tmp_path, capsys):
    base = scenes()
    a = report("A", base, base, [8] * 4, [8] * 4)
    other_seeds = report("B", base, base, [8] * 4, [8] * 4)
    other_seeds["settings"]["probes"] = 8
    with pytest.raises(ValueError, match="different settings \\(probes\\)"):
        compare.compare(a, other_seeds)
    old = report("C", base, base, [8] * 4, [8] * 4)
    del old["turn_probes"]["per_state_correct"]
    with pytest.raises(ValueError, match="predates per-unit data"):
        compare.compare(a, old)
    faster = report("D", base * 0.5, base, [8] * 4, [8] * 4)
    faster["settings"]["fps_frames"] = 300  # timing only: the held-out units are the same
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps(a))
    (tmp_path / "d.json").write_text(json.dumps(faster))
    with pytest.raises(SystemExit):  # a usage error, not a traceback
        compare.main([str(tmp_path / "a"), str(tmp_path / "missing.json")])
    assert "No such file" in capsys.readouterr().err
    compare.main([str(tmp_path / "a"), str(tmp_path / "d.json")])
    out = capsys.readouterr().out
    assert "A = A" in out and "B = D" in out and "PSNR@4" in out and "paired SE" in out


def test_prompt_ratios_are_compared_under_the_same_classifier_only(capsys):
    """A report from before the block classifier holds the full-resolution histogram's ratio: it lines
    up with the newer report's copy of that score, and its block-classifier cell is left empty."""
    base = scenes()
    old = report("old", base, base, [8] * 4, [8] * 4)
    new = report("new", base, base, [8] * 4, [8] * 4)
    new["prompt"] = {"classifier": "8px-block colours", "ratio_to_simulator": 0.8,
                     "full_resolution_histogram": {"ratio_to_simulator": 0.55}}
    rows = compare.compare(new, old)
    assert rows["prompt ratio (full-res histogram)"]["diff"] == pytest.approx(0.05)
    blocks = rows["prompt ratio (8px blocks)"]
    assert blocks["a"] == 0.8 and math.isnan(blocks["b"]) and math.isnan(blocks["diff"])
    print(compare.table(compare.compare(new, new), "new", "new"))
    lines = {line.split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "nan" not in "".join(lines.values())  # an undefined z (zero paired error) prints as a dash
    assert lines["PSNR@4"].rstrip().endswith("—  (6 units)")
