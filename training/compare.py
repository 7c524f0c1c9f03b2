"""``python -m training compare A/report.json B/report.json``: is model A better than B beyond the probes' noise?

Two evaluations under the same protocol see the same held-out units: every open-loop episode and every
turn-probe state is the same scene under the same actions and noise seeds in both reports. So each
metric's difference A - B gets a *paired* jackknife standard error (``evaluate.jackknife_se``): the unit
left out is left out of both models at once, and the scene-to-scene spread that both share cancels.
That is the error to read when deciding what ships; the per-report errors are larger.

Metrics without per-unit data in the report (drift, idle, prompt) are printed without an error.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .evaluate import THEME_CELL, delta_psnr, jackknife_se, pooled_psnr

PAIRED_UNITS = {"open_loop": "episodes", "turn_probes": "states"}
# Settings that may differ between the two runs without changing what the held-out units are.
UNPAIRED_SETTINGS = {"fps_frames", "compiled_fps", "steps"}


def load(path: Path) -> dict:
    """A report.json, or the report.json inside a folder."""
    path = path / "report.json" if path.is_dir() else path
    return json.loads(path.read_text(encoding="utf-8"))


def check_paired(a: dict, b: dict) -> None:
    """Refuse reports whose held-out units differ (other sizes or seeds), or that lack per-unit data."""
    sa = {k: v for k, v in a["settings"].items() if k not in UNPAIRED_SETTINGS}
    sb = {k: v for k, v in b["settings"].items() if k not in UNPAIRED_SETTINGS}
    if sa != sb:
        diff = sorted(k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k))
        raise ValueError(f"the reports were made under different settings ({', '.join(diff)}): nothing to pair")
    for r in (a, b):
        if "per_episode_mse" not in r["open_loop"] or "per_state_correct" not in r["turn_probes"]:
            raise ValueError(f"report of {r['model']} predates per-unit data; evaluate it again")


def turn_percent(report: dict, kept: np.ndarray) -> float:
    """Turn-direction accuracy of the kept probe states, in percent."""
    tp = report["turn_probes"]
    return float(100 * np.asarray(tp["per_state_correct"])[kept].sum() / np.asarray(tp["per_state_valid"])[kept].sum())


def paired_metrics() -> list[tuple[str, str, Callable[[dict, np.ndarray], float]]]:
    """(name, unit section, statistic(report, kept unit indices)) of every metric with per-unit data."""
    def mse(r: dict, name: str) -> np.ndarray:
        return np.asarray(r["open_loop"]["per_episode_mse"][name], dtype=np.float64)

    return [
        ("turn direction (%)", "turn_probes", turn_percent),
        ("PSNR@4", "open_loop", lambda r, i: pooled_psnr(mse(r, "model")[i])[3]),
        ("PSNR@8", "open_loop", lambda r, i: pooled_psnr(mse(r, "model")[i])[7]),
        ("mirrored ΔPSNR@8", "open_loop", lambda r, i: delta_psnr(mse(r, "model")[i], mse(r, "model_mirrored")[i])),
        ("shuffled ΔPSNR@8", "open_loop", lambda r, i: delta_psnr(mse(r, "model")[i], mse(r, "model_shuffled")[i])),
    ]


def prompt_ratio(report: dict, block_classifier: bool) -> float:
    """The prompt ratio under one classifier; reports without a ``classifier`` key predate the block
    classifier, and their ``ratio_to_simulator`` is the full-resolution histogram's."""
    p = report["prompt"]
    if "classifier" not in p:
        return math.nan if block_classifier else p.get("ratio_to_simulator", math.nan)
    return p["ratio_to_simulator"] if block_classifier else p["full_resolution_histogram"]["ratio_to_simulator"]


def unpaired_metrics() -> list[tuple[str, Callable[[dict], float]]]:
    return [
        ("sharpness after drift", lambda r: r["drift"]["sharpness_ratio"]),
        ("idle change (simulator {:.2f})", lambda r: r["idle"]["mean_abs_change_model"]),
        (f"prompt ratio ({THEME_CELL}px blocks)", lambda r: prompt_ratio(r, block_classifier=True)),
        ("prompt ratio (full-res histogram)", lambda r: prompt_ratio(r, block_classifier=False)),
        ("fps median, 1 thread", lambda r: r["fps"]["fps_median"]),
    ]


def compare(a: dict, b: dict) -> dict[str, dict[str, float]]:
    """Every metric of both reports; the paired ones with ``diff`` (A - B), ``se`` and ``z``."""
    check_paired(a, b)
    rows: dict[str, dict[str, float]] = {}
    for name, section, stat in paired_metrics():
        n = a[section][PAIRED_UNITS[section]]
        va, vb = stat(a, np.arange(n)), stat(b, np.arange(n))
        se = jackknife_se(lambda i: stat(a, i) - stat(b, i), n)
        rows[name] = {"a": va, "b": vb, "diff": va - vb, "se": se,
                      "z": (va - vb) / se if se > 0 else math.nan, "units": n}
    for name, stat in unpaired_metrics():
        rows[name.format(a["idle"]["mean_abs_change_simulator"])] = {"a": stat(a), "b": stat(b),
                                                                     "diff": stat(a) - stat(b)}
    return rows


def table(rows: dict[str, dict[str, float]], a_name: str, b_name: str) -> str:
    lines = [f"A = {a_name}", f"B = {b_name}",
             f"{'metric':<33} {'A':>9} {'B':>9} {'A - B':>9} {'paired SE':>10} {'z':>6}"]

    def cell(value: float, spec: str, width: int) -> str:  # a missing value (nan) prints as a dash
        return f"{'—':>{width}}" if math.isnan(value) else f"{value:>{spec}}"

    for name, r in rows.items():
        paired = f" {cell(r['se'], '10.3g', 10)} {cell(r['z'], '6.2f', 6)}  ({r['units']} units)" if "se" in r else ""
        lines.append(f"{name:<33} {cell(r['a'], '9.4g', 9)} {cell(r['b'], '9.4g', 9)} {cell(r['diff'], '+9.3g', 9)}{paired}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="report.json (or its folder) of model A")
    parser.add_argument("b", type=Path, help="report.json (or its folder) of model B")
    args = parser.parse_args(argv)
    try:
        a, b = load(args.a), load(args.b)
        rows = compare(a, b)
    except (OSError, ValueError, KeyError) as e:  # a missing file, bad JSON, unpaired or partial reports
        parser.error(f"{type(e).__name__}: {e}")
    print(table(rows, a["model"], b["model"]))
