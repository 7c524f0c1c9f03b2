"""What rewinding costs: the per-frame bookkeeping of the kept history, a snapshot, a restore, and a
portable snapshot's size (what a ZeroGPU segment hands back to the main process).

    python -m bench.snapshot                          # the embedded model, CPU
    python -m bench.snapshot --model ../shared/fixtures/waypoint-dit-a
    python -m bench.snapshot --model waypoint-1-small --device cuda   # Waypoint-1-Small's shapes, random weights

The bookkeeping is timed where it runs (``WorldEngine._keep``, once per frame) and as the difference
of ``gen_frame`` with and without it; the restore re-primes ``restore_frames`` frames.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from bench.engine import build_engine, sync, timed
from world_engine.controls import VK, CtrlInput


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded, waypoint-1-small or a model folder")
    parser.add_argument("--device", default=None)
    parser.add_argument("--layers", type=int, default=None, help="fewer layers (waypoint-1-small on a CPU)")
    parser.add_argument("--frames", type=int, default=120, help="frames played before measuring")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        engine = build_engine(args.model, device, dtype, args.layers, compile=False, attention=None,
                              weights_dir=Path(tmp) / "weights" if args.model == "waypoint-1-small" else None)
        session = engine.fork(seed=0)
        if args.model == "embedded":
            session.set_prompt("a frozen ice cave")      # as text: a portable snapshot carries it
        ctrl = CtrlInput(button={VK["W"] % engine.config.n_buttons}, mouse=(1.5, 0.0))
        latent_only = session.autoencoder is None
        for _ in range(args.frames):
            session.gen_frame(ctrl, return_img=not latent_only)

        scratch = engine.fork(seed=1)                  # its ring fills with copies of one latent
        x = torch.zeros((1, 1, *session.config.latent_shape), device=device, dtype=dtype)
        keep_us = []
        for _ in range(2000):
            sync(device)
            t0 = time.perf_counter()
            scratch._keep(x, ctrl, drew=True)
            sync(device)
            keep_us.append((time.perf_counter() - t0) * 1e6)

        ring = engine.fork(seed=2)                     # memory: a full ring, then as much again
        tracemalloc.start()
        for _ in range(ring._history_frames):
            ring._keep(x, ctrl, drew=True)
        objects = tracemalloc.get_traced_memory()[0] / ring._history_frames    # Python objects, not tensor data
        tracemalloc.stop()
        rss = _rss_kib()
        for _ in range(ring._history_frames):
            ring._keep(x, ctrl, drew=True)
        grown = _rss_kib() - rss

        snap_us = [t * 1000 for t in timed(lambda: session.snapshot(), device, 200)]
        point = session.snapshot(min(60, session.rewind_limit))
        restore_ms = timed(lambda: session.restore(point), device, args.repeats)
        try:
            carried = f"{len(pickle.dumps(session.snapshot().portable())) / 1024:.0f} KiB pickled"
        except ValueError as exc:       # a random prompt embedding (build_engine) stays in the process
            carried = f"n/a ({exc})"
        frame_ms = timed(lambda: session.gen_frame(ctrl, return_img=not latent_only), device, 10)

    print(f"model {args.model} on {device} ({dtype}); {engine.config.n_layers} layers, receptive field "
          f"{engine.receptive_frames} frames, restore re-primes {engine.restore_frames}")
    print(f"per-frame bookkeeping (_keep): median {statistics.median(keep_us):.1f} us, p99 "
          f"{sorted(keep_us)[int(0.99 * len(keep_us))]:.1f} us")
    print(f"snapshot(): median {statistics.median(snap_us):.1f} us ({len(point.frames)} kept frames)")
    print(f"restore(): median {statistics.median(restore_ms):.1f} ms, min {min(restore_ms):.1f} ms "
          f"(one frame: median {statistics.median(frame_ms):.1f} ms)")
    print(f"portable snapshot: {carried}")
    print(f"kept history ({ring._history_frames} frames): per frame {x.numel() * x.element_size() / 1024:.1f} KiB "
          f"latent + {objects / 1024:.2f} KiB Python objects; as many frames again: RSS +{grown} KiB (a ring)")


if __name__ == "__main__":
    main()
