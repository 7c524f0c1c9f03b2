"""End-to-end speed of a model folder: ``WorldEngine.gen_frame`` (all denoise passes, the cache
pass and the decode to uint8) timed frame by frame, eager or compiled as the app's CPU fast path
(``--compile``: ``WorldEngine.compile_step``; the compile time is reported too). The cores may be
shared, so min and median are both reported."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from world_engine.controls import VK, CtrlInput
from world_engine.engine import WorldEngine


def measure_fps(model: Path | None, frames: int = 200, warmup: int = 20, threads: int = 2,
                compile: bool = False, steps: int = 0) -> dict[str, float]:
    """Frame times of one session; ``steps`` > 0 replaces the model's schedule (``set_steps``)."""
    torch.set_num_threads(threads)
    engine = WorldEngine(model, device="cpu", seed=0)
    engine.set_prompt("a stone dungeon lit by torches")
    engine.set_steps(steps)
    compile_s = 0.0
    if compile:
        t0 = time.perf_counter()
        engine.compile_step()
        compile_s = time.perf_counter() - t0
    moves = [CtrlInput(button={VK["W"]}), CtrlInput(mouse=(8.0, 0.0)), CtrlInput(button={VK["A"]}), CtrlInput()]
    times = []
    for i in range(warmup + frames):
        t0 = time.perf_counter()
        engine.gen_frame(moves[(i // 10) % len(moves)])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"frames": frames, "threads": threads, "passes_per_frame": len(engine.config.scheduler_sigmas),
            "compiled": compile, "compile_s": round(compile_s, 1),
            "ms_min": 1e3 * times[0], "ms_median": 1e3 * statistics.median(times),
            "ms_p90": 1e3 * times[int(0.9 * len(times))],
            "fps_best": 1 / times[0], "fps_median": 1 / statistics.median(times),
            "fps_p90_frame": 1 / times[int(0.9 * len(times))]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training fps", description=__doc__)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="time the compiled CPU fast path")
    parser.add_argument("--steps", type=int, default=0, help="denoising steps (default: the model's schedule)")
    args = parser.parse_args(argv)
    print(json.dumps(measure_fps(args.model, args.frames, threads=args.threads, compile=args.compile,
                                 steps=args.steps), indent=1))
