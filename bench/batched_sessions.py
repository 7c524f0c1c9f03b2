"""Two visitors on one device: each on its own thread, or both batched into one forward per pass.

    python -m bench.batched_sessions --frames 100 [--compile] [--model FOLDER] [--guidance G] [--device cuda]

Prints frames per second per visitor for: one visitor alone (one thread), two visitors on two
threads (one intra-op thread each, as the app's CPU slots run them) and two visitors batched on
one thread (``world_engine.gen_frames``), plus the CPU seconds each frame cost. Every frame is a
full ``gen_frame`` (all denoising passes, the cache pass and the decode to uint8 pixels), on the host.
On CUDA ``--compile`` is the engine's ``torch.compile`` (each batch size compiles in the warm-up).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import torch

from world_engine import CtrlInput, WorldEngine, gen_frames

TURN = CtrlInput(mouse=(4.0, 0.0))


def timed(fn, frames: int, warmup: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``frames`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(frames):
        fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batched_sessions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="the compiled CPU path (compile_step)")
    parser.add_argument("--guidance", type=float, default=None, help="override ctrl_guidance")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = {"ctrl_guidance": args.guidance} if args.guidance is not None else None
    cuda = args.device.startswith("cuda")
    engine = WorldEngine(args.model, device=args.device, seed=0, overrides=overrides, compile=cuda and args.compile)
    if args.compile and not cuda:
        engine.compile_step()
    a, b = engine.fork(seed=1), engine.fork(seed=2)
    print(f"model {engine.folder.name}: {engine.n_steps} steps, ctrl_guidance {engine.config.ctrl_guidance}, "
          f"{'compiled' if args.compile else 'eager'} on {args.device}, {args.frames} frames per visitor, torch threads 1")

    wall, cpu = timed(lambda: a.gen_frame(TURN).cpu(), args.frames, args.warmup)
    print(f"alone:            {args.frames / wall:6.1f} fps per visitor, {1e3 * cpu / args.frames:5.1f} ms CPU per frame")

    results: dict[str, tuple[float, float]] = {}

    def visitor(name: str, session: WorldEngine) -> None:
        results[name] = timed(lambda: session.gen_frame(TURN).cpu(), args.frames, args.warmup)

    threads = [threading.Thread(target=visitor, args=(n, s)) for n, s in (("a", a), ("b", b))]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    fps = [args.frames / results[n][0] for n in ("a", "b")]
    print(f"two threads:      {min(fps):6.1f} / {max(fps):.1f} fps per visitor, "
          f"{1e3 * cpu / (2 * (args.frames + args.warmup)):5.1f} ms CPU per frame")

    wall, cpu = timed(lambda: [f.cpu() for f in gen_frames([a, b], [TURN, TURN])], args.frames, args.warmup)
    print(f"batched (1 thread): {args.frames / wall:4.1f} fps per visitor, "
          f"{1e3 * cpu / (2 * args.frames):5.1f} ms CPU per frame")


if __name__ == "__main__":
    main()
