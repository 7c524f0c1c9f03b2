"""End-to-end speed of a model folder: ``WorldEngine.gen_frame`` (all denoise passes, the cache
pass and the decode to uint8) timed frame by frame. The cores may be shared, so min and median
are both reported."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from world_engine.controls import VK, CtrlInput
from world_engine.engine import WorldEngine


def measure_fps(model: Path | None, frames: int = 200, warmup: int = 20, threads: int = 2) -> dict[str, float]:
    torch.set_num_threads(threads)
    engine = WorldEngine(model, device="cpu", seed=0)
    engine.set_prompt("a stone dungeon lit by torches")
    moves = [CtrlInput(button={VK["W"]}), CtrlInput(mouse=(8.0, 0.0)), CtrlInput(button={VK["A"]}), CtrlInput()]
    times = []
    for i in range(warmup + frames):
        t0 = time.perf_counter()
        engine.gen_frame(moves[(i // 10) % len(moves)])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"frames": frames, "threads": threads, "passes_per_frame": len(engine.config.scheduler_sigmas),
            "ms_min": 1e3 * times[0], "ms_median": 1e3 * statistics.median(times),
            "ms_p90": 1e3 * times[int(0.9 * len(times))],
            "fps_best": 1 / times[0], "fps_median": 1 / statistics.median(times),
            "fps_p90_frame": 1 / times[int(0.9 * len(times))]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training fps", description=__doc__)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print(json.dumps(measure_fps(args.model, args.frames, threads=args.threads), indent=1))
