"""Frames per second of the simulator's renderer (and of full data generation) on this machine.

    python examples/sim_benchmark.py                  # CPU, torch's default thread count
    python examples/sim_benchmark.py --threads 1      # one core
    python examples/sim_benchmark.py --procs 2        # two 1-thread processes side by side
    python examples/sim_benchmark.py --device cuda    # on a GPU

"render" times ``render()`` alone on a fixed scene; "step" adds the data policy, physics and
scene building (what dataset generation and ``ClipStream`` pay per frame). Each figure is frames
per second of wall-clock time, best and median of ``--repeats`` runs, and "cpu" is frames per
second of this process's CPU time (what an otherwise idle core would deliver; on a shared machine
the wall-clock figures drop while the CPU figure stays). With ``--procs N`` the N processes run
concurrently and their frame rates are added up.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from simulator import EpisodeSpec, Policy, WorldBatch, render  # noqa: E402
from simulator.policy import policy_seeds  # noqa: E402


def _time(fn, repeats: int, device: torch.device) -> tuple[float, float, float]:
    """(best, median) wall seconds and best CPU seconds of ``fn``."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), statistics.median(wall), min(cpu)


def bench(batch: int, size: int, ss: int, repeats: int, device: str, threads: int | None) -> dict:
    """Frames per second (best, median, cpu) for rendering and for full steps."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    specs = [EpisodeSpec.from_seed(seed) for seed in range(batch)]
    worlds = WorldBatch(specs, size=size, ss=ss, device=device)
    policy = Policy(policy_seeds([s.seed for s in specs], device))
    for _ in range(8):  # walk a little so the views are typical, not all spawn points
        worlds.step(policy.act(worlds.state, worlds.static.cells))
    scene = worlds.scene()
    out = {}
    for name, fn in (("render", lambda: render(scene, worlds.atlas, size, size, ss)),
                     ("step", lambda: worlds.step(policy.act(worlds.state, worlds.static.cells)))):
        out[name] = tuple(batch / t for t in _time(fn, repeats, device))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--procs", type=int, default=1, help="concurrent processes (1 thread each)")
    parser.add_argument("--batch", type=int, default=64, help="worlds per batched call at 64x64")
    parser.add_argument("--ss", type=int, default=2, help="supersampling factor")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    threads = 1 if args.procs > 1 else args.threads
    if threads:
        torch.set_num_threads(threads)
    print(f"device={args.device} processes={args.procs} threads/process={torch.get_num_threads()} "
          f"supersampling={args.ss}x; frames/s as best / median (wall clock), cpu")
    print(f"{'size':>9} {'batch':>5} {'render fps':>24} {'step fps (policy+physics+render)':>38}")
    for size in (64, 128):
        for batch in (args.batch if size == 64 else max(args.batch // 4, 1), 1):
            job = (batch, size, args.ss, args.repeats, args.device, threads)
            if args.procs > 1:
                with mp.get_context("spawn").Pool(args.procs) as pool:
                    results = pool.starmap(bench, [job] * args.procs)
                r = {k: tuple(sum(x[k][i] for x in results) for i in range(3)) for k in results[0]}
            else:
                r = bench(*job)
            cells = [f"{r[k][0]:>7.0f} / {r[k][1]:<6.0f} cpu {r[k][2]:<6.0f}" for k in ("render", "step")]
            print(f"{size:>4}x{size:<4} {batch:>5} {cells[0]:>28} {cells[1]:>32}")


if __name__ == "__main__":
    main()
