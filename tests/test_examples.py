"""The example scripts a reader runs first work from a checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_rollout_example_writes_a_gif_and_a_strip(tmp_path):
    out = tmp_path / "walk.gif"
    result = subprocess.run([sys.executable, "examples/rollout.py", "--frames", "5", "--out", str(out),
                             "--prompt", "a frozen cave"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    gif = Image.open(out)
    assert gif.n_frames == 5 and gif.size == (64, 64)
    assert Image.open(out.with_suffix(".png")).size[0] >= 64
