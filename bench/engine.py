"""Benchmark the engine: ms per DiT pass and per frame, fps, decode, end-to-end, against the FLOP floor.

    python -m bench.engine --model waypoint-1-small          # exact config, random weights + released-width AE
    python -m bench.engine --model path/or/repo --steps 4 2
    python -m bench.engine --model embedded --device cpu --repeats 3

Everything timed goes through the engine's own path: the flat DiT step as the engine runs it
(``torch.compile``'d on CUDA unless ``--compile off``), ``gen_frame``, the autoencoder decode and
``next_frame`` (frame on the host), and frames streamed with their JPEG encode, serial vs
overlapped as the player runs them (``streamed``). Random weights need no download; the released config is
``WAYPOINT_1_SMALL`` below (``waypoint-format.md`` §5.1). Prints a table and writes JSON
(``--json``, default ``bench-<model>.json`` in ``--out``, a temp folder).

"FLOP floor": the time the frame's FLOPs would take at the device's measured dense-matmul peak;
``floor_fraction`` = floor / measured (1.0 would be a frame at peak).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from world_engine.config import WorldConfig
from world_engine.controls import VK, CtrlInput
from world_engine.engine import WorldEngine

WAYPOINT_1_SMALL: dict[str, Any] = {
    "d_model": 2560, "n_heads": 40, "n_kv_heads": 20, "n_layers": 22, "mlp_ratio": 5, "channels": 16,
    "height": 16, "width": 16, "patch": [2, 2], "tokens_per_frame": 256, "n_frames": 4096,
    "local_window": 16, "global_window": 128, "global_attn_period": 4, "global_attn_offset": 0,
    "global_pinned_dilation": 8, "value_residual": False, "gated_attn": True, "n_buttons": 256,
    "ctrl_conditioning": "mlp_fusion", "ctrl_conditioning_period": 3, "ctrl_cond_dropout": 0.0,
    "prompt_conditioning": "cross_attention", "prompt_conditioning_period": 3, "prompt_embedding_dim": 2048,
    "prompt_cond_dropout": 0.0, "noise_conditioning": "wan",
    "scheduler_sigmas": [1.0, 0.8609585762023926, 0.729332447052002, 0.3205108940601349, 0.0],
}
UMT5_TOKENS = 512
ATTENTION_KERNEL = re.compile(r"flash|fmha|attention|attn|flex|sdpa|cudnn", re.IGNORECASE)


def forward_flops(cfg: WorldConfig, prompt_tokens: int = UMT5_TOKENS) -> float:
    """FLOPs of one DiT forward with a full cache (multiply-add = 2), prompt K/V cached."""
    t, d, dh = cfg.tokens_per_frame, cfg.d_model, cfg.head_dim
    qkv = 2 * t * d * (cfg.n_heads + 2 * cfg.n_kv_heads) * dh
    dense = qkv + 2 * t * d * d + 4 * t * d * d * cfg.mlp_ratio
    total = 0.0
    for layer in range(cfg.n_layers):
        window, dilation = cfg.layer_window(layer)
        keys = (window // dilation + (1 if dilation > 1 else 0)) * t
        total += dense + 4 * t * keys * dh * cfg.n_heads
        if cfg.has_prompt_attn(layer):
            p = cfg.prompt_embedding_dim
            total += 2 * t * d * p * 2 + 4 * t * prompt_tokens * p
        if cfg.has_ctrl_fusion(layer):
            total += 4 * t * d * d
    return total + 2 * t * d * cfg.channels * cfg.patch[0] * cfg.patch[1] * 2


def decode_flops(autoencoder, latent_shape: tuple[int, int, int]) -> float:
    """FLOPs of one autoencoder decode, counted from its convolutions at their real input sizes."""
    decoder = getattr(autoencoder, "decoder", None)
    decoder = getattr(decoder, "_orig_mod", decoder)
    if not isinstance(decoder, torch.nn.Module):
        return 0.0
    total = [0.0]

    def count(module, inputs, output):
        total[0] += 2 * module.weight[0].numel() * output.numel()  # (in/groups * kh * kw) MACs per output

    hooks = [m.register_forward_hook(count) for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        p = next(decoder.parameters())
        with torch.inference_mode():
            decoder(torch.zeros(1, *latent_shape, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def unique_params(module: torch.nn.Module) -> int:
    """Parameters counted once per storage (tied and fused weights share one)."""
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() // p.element_size()
                for p in module.parameters()}
    return sum(storages.values())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``fn`` per call, synchronising the device."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return times


def encode_jpeg(img: np.ndarray) -> bytes:
    """The player's encode of a frame of Waypoint's size (q80, 4:2:0 chroma: ``player.stream``)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=80, subsampling=2)
    return buf.getvalue()


def streamed_fps(engine: WorldEngine, walk: CtrlInput, steps: int, frames: int, device: torch.device
                 ) -> dict[str, float]:
    """Frames the player could stream per second, JPEG included: one after another (frame, wait for
    its pixels, encode), and as ``player.stream`` overlaps them on a GPU (frame ``n``'s download and
    encode on a helper thread while frame ``n + 1`` runs)."""
    engine.set_steps(steps)
    encode_jpeg(engine.next_frame(walk))
    sync(device)
    start = time.perf_counter()
    for _ in range(frames):
        encode_jpeg(engine.next_frame(walk))
    serial = (time.perf_counter() - start) / frames
    with ThreadPoolExecutor(1) as pool:
        held = None
        sync(device)
        start = time.perf_counter()
        for _ in range(frames):
            pending = engine.next_frame_async(walk)
            queued = pool.submit(lambda p=pending: encode_jpeg(p.result()))
            if held is not None:
                held.result()
            held = queued
        held.result()
        overlapped = (time.perf_counter() - start) / frames
    return {"serial_fps": round(1 / serial, 1), "overlapped_fps": round(1 / overlapped, 1)}


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul throughput of this device and dtype (the roofline we compare to)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    ms = min(timed(lambda: a @ b, device, 10))
    return 2 * n**3 / (ms / 1000) / 1e12


def attention_kernels(fn: Callable[[], Any], device: torch.device) -> list[str]:
    """Names of the attention kernels one call of ``fn`` launches (CUDA; profiler)."""
    if device.type != "cuda":
        return []
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    names = {e.key for e in prof.key_averages() if ATTENTION_KERNEL.search(e.key)}
    return sorted(names)[:8]


def write_waypoint_1_small(folder: Path, layers: int | None, device: torch.device) -> Path:
    from bench.random_checkpoint import write_random_checkpoint

    values = dict(WAYPOINT_1_SMALL, n_layers=layers or WAYPOINT_1_SMALL["n_layers"])
    full = values["n_layers"] == WAYPOINT_1_SMALL["n_layers"]
    print(f"writing random weights for {values['n_layers']} layers to {folder} ...", flush=True)
    return write_random_checkpoint(folder, autoencoder="released" if full else None, dtype=torch.bfloat16,
                                   device="cuda" if device.type == "cuda" else "cpu", **values)


def build_engine(model: str, device: torch.device, dtype: torch.dtype, layers: int | None, compile: bool | str,
                 attention: str | None, weights_dir: Path | None = None) -> WorldEngine:
    """The engine to time; UMT5-conditioned models get a random 512-token prompt (speed is the same)."""
    kwargs = dict(device=device, dtype=dtype, seed=0, compile=compile, attention=attention)
    if model == "embedded":
        engine = WorldEngine(None, **kwargs)
    elif model == "waypoint-1-small":
        if weights_dir is not None:   # write once, reuse across runs (gpu_check.sh)
            folder = weights_dir if (weights_dir / "config.yaml").is_file() else \
                write_waypoint_1_small(weights_dir, layers, device)
            engine = WorldEngine(folder, **kwargs)
        else:
            with tempfile.TemporaryDirectory() as tmp:  # gigabytes of random weights: never left behind
                engine = WorldEngine(write_waypoint_1_small(Path(tmp), layers, device), **kwargs)
    else:
        engine = WorldEngine(model, **kwargs)
    if engine.config.prompt_conditioning is not None:
        engine.set_prompt_embedding(torch.randn(1, UMT5_TOKENS, engine.config.prompt_embedding_dim) * 0.1,
                                    torch.zeros(1, UMT5_TOKENS, dtype=torch.bool))
    return engine


def bench(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    compile: bool | str = {"auto": device.type == "cuda", "on": True, "off": False}.get(args.compile, args.compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    engine = build_engine(args.model, device, dtype, args.layers, compile, args.attention, args.weights_dir)
    load_s = time.perf_counter() - start
    cfg = engine.config
    walk = CtrlInput(button={VK["W"]}, mouse=(1.0, 0.0)) if cfg.n_buttons > VK["W"] else CtrlInput(mouse=(1.0, 0.0))
    flops = forward_flops(cfg)
    result: dict[str, Any] = {
        "model": args.model, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads",
        "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
        "compiled": engine.compile_mode or False, "attention": engine.attention, "load_s": round(load_s, 2),
        "params_m": round(unique_params(engine.model) / 1e6, 2),
        "forward_gflop": round(flops / 1e9, 3),
    }
    peak = matmul_peak_tflops(device, dtype)
    result["matmul_peak_tflops"] = round(peak, 2)

    # The first frame compiles (cold: empty inductor cache; warm: a cache from an earlier run).
    first = time.perf_counter()
    engine.gen_frame(walk, return_img=False)
    sync(device)
    result["first_frame_s"] = round(time.perf_counter() - first, 2)

    # Fill the cache so every forward attends to a full window, as in steady play.
    warm_start = time.perf_counter()
    fill = max(cfg.local_window, cfg.global_window // cfg.global_pinned_dilation) + 1
    for _ in range(min(fill, args.warmup_frames)):
        engine.gen_frame(walk, return_img=False)
    sync(device)
    result["warmup_s"] = round(time.perf_counter() - warm_start, 2)

    # One denoising pass as gen_frame runs it (the engine's flat step, compiled when the engine is).
    conditions = engine.frame_conditions(walk)
    x = torch.randn((1, 1, *cfg.latent_shape), device=device, dtype=dtype)
    fwd = timed(lambda: engine.denoise_step(x, conditions, 0), device, args.repeats)
    result["forward_ms"] = round(statistics.median(fwd), 3)
    result["forward_ms_min"] = round(min(fwd), 3)
    result["forward_tflops"] = round(flops / (min(fwd) / 1000) / 1e12, 3)
    result["forward_floor_ms"] = round(flops / (peak * 1e12) * 1000, 3)
    result["fraction_of_peak"] = round(result["forward_tflops"] / peak, 3)
    result["attention_kernels"] = attention_kernels(lambda: engine.denoise_step(x, conditions, 0), device)

    per_steps = {}
    released_steps = len(cfg.scheduler_sigmas) - 1
    for steps in args.steps:
        engine.set_steps(0 if steps == released_steps else steps)
        engine.gen_frame(walk, return_img=False)  # a new schedule: same graph, new modulations
        frame = timed(lambda: engine.gen_frame(walk, return_img=False), device, args.repeats)
        frame_flops = (steps + 1) * flops
        per_steps[steps] = {"frame_ms": round(statistics.median(frame), 3), "frame_ms_min": round(min(frame), 3),
                            "fps": round(1000 / statistics.median(frame), 1),
                            "frame_gflop": round(frame_flops / 1e9, 3),
                            "floor_fraction": round(frame_flops / (peak * 1e12) / (statistics.median(frame) / 1000), 3)}
    result["per_steps"] = per_steps

    if engine.autoencoder is not None:
        latent = engine.gen_frame(walk, return_img=False)
        engine.autoencoder.decode(latent)   # compiles on CUDA
        dec = timed(lambda: engine.autoencoder.decode(latent), device, args.repeats)
        result["decode_ms"] = round(statistics.median(dec), 3)
        result["decode_gflop"] = round(decode_flops(engine.autoencoder, cfg.latent_shape) / 1e9, 1)
        end_to_end = {}
        for steps in args.steps:
            engine.set_steps(0 if steps == released_steps else steps)
            engine.next_frame(walk)
            e2e = timed(lambda: engine.next_frame(walk), device, args.repeats)
            end_to_end[steps] = {"ms": round(statistics.median(e2e), 3), "fps": round(1000 / statistics.median(e2e), 1)}
        result["end_to_end"] = end_to_end
        result["streamed"] = {steps: streamed_fps(engine, walk, steps if steps != released_steps else 0,
                                                  args.repeats, device) for steps in args.steps}
    engine.set_steps(0)
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="waypoint-1-small",
                        help="'waypoint-1-small' (random weights), 'embedded', a folder or a repo id")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None)
    parser.add_argument("--compile", default="auto",
                        help="auto (on CUDA), on, off, or a torch.compile mode (max-autotune, reduce-overhead)")
    parser.add_argument("--attention", choices=["sdpa", "flex"], default=None,
                        help="attention form (default: flex compiled on CUDA, else sdpa)")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers (CPU smoke runs of big configs)")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="keep the random Waypoint-1-Small weights here and reuse them on the next run")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup-frames", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "world-engine-bench",
                        help="folder of the default JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    path = args.json or args.out / f"bench-{Path(args.model).name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
