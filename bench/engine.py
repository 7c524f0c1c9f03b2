"""Benchmark the engine: ms per DiT forward and per frame, fps, TFLOP/s against the matmul peak.

    python -m bench.engine --model waypoint-1-small          # exact config, random weights
    python -m bench.engine --model path/or/repo --steps 4 2
    python -m bench.engine --model embedded --device cpu

Random weights need no download; the released config is ``WAYPOINT_1_SMALL`` below
(``waypoint-format.md`` §5.1). Prints a table and writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

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


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``fn`` per call, synchronising the device."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return times


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul throughput of this device and dtype (the roofline we compare to)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    ms = min(timed(lambda: a @ b, device, 10))
    return 2 * n**3 / (ms / 1000) / 1e12


def build_engine(model: str, device: torch.device, dtype: torch.dtype, layers: int | None) -> WorldEngine:
    """The engine to time; UMT5-conditioned models get a random 512-token prompt (speed is the same)."""
    if model == "embedded":
        return WorldEngine(None, device=device, dtype=dtype, seed=0)
    if model == "waypoint-1-small":
        from bench.random_checkpoint import write_random_checkpoint

        values = dict(WAYPOINT_1_SMALL, n_layers=layers or WAYPOINT_1_SMALL["n_layers"])
        with tempfile.TemporaryDirectory() as tmp:  # gigabytes of random weights: never left behind
            print(f"writing random weights for {values['n_layers']} layers to {tmp} ...", flush=True)
            engine = WorldEngine(write_random_checkpoint(tmp, autoencoder=None, **values), device=device,
                                 dtype=dtype, seed=0)
    else:
        engine = WorldEngine(model, device=device, dtype=dtype, seed=0)
    if engine.config.prompt_conditioning is not None:
        engine.set_prompt_embedding(torch.randn(1, UMT5_TOKENS, engine.config.prompt_embedding_dim) * 0.1,
                                    torch.zeros(1, UMT5_TOKENS, dtype=torch.bool))
    return engine


def bench(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    start = time.perf_counter()
    engine = build_engine(args.model, device, dtype, args.layers)
    load_s = time.perf_counter() - start
    cfg = engine.config
    walk = CtrlInput(button={VK["W"]}, mouse=(1.0, 0.0)) if cfg.n_buttons > VK["W"] else CtrlInput(mouse=(1.0, 0.0))
    result: dict[str, Any] = {
        "model": args.model, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads",
        "dtype": str(dtype).replace("torch.", ""), "load_s": round(load_s, 2),
        "params_m": round(sum(p.numel() for p in engine.model.parameters()) / 1e6, 2),
        "forward_gflop": round(forward_flops(cfg) / 1e9, 3),
    }
    peak = matmul_peak_tflops(device, dtype)
    result["matmul_peak_tflops"] = round(peak, 2)

    # Fill the cache so every forward attends to a full window, as in steady play.
    warm_start = time.perf_counter()
    fill = max(cfg.local_window, cfg.global_window // cfg.global_pinned_dilation) + 1
    for _ in range(min(fill, args.warmup_frames)):
        engine.gen_frame(walk, return_img=False)
    result["warmup_s"] = round(time.perf_counter() - warm_start, 2)

    # One denoising step as gen_frame runs it (the engine's forward, compiled when the engine is).
    conditions = engine.frame_conditions(walk)
    x = torch.randn((1, 1, *cfg.latent_shape), device=device, dtype=dtype)
    fwd = timed(lambda: engine.denoise_step(x, conditions, 0), device, args.repeats)
    result["forward_ms"] = round(statistics.median(fwd), 2)
    result["forward_ms_min"] = round(min(fwd), 2)
    result["forward_tflops"] = round(forward_flops(cfg) / (min(fwd) / 1000) / 1e12, 3)
    result["fraction_of_peak"] = round(result["forward_tflops"] / peak, 3)

    per_steps = {}
    released_steps = len(cfg.scheduler_sigmas) - 1
    for steps in args.steps:
        engine.set_steps(0 if steps == released_steps else steps)
        frame = timed(lambda: engine.gen_frame(walk, return_img=False), device, args.repeats)
        per_steps[steps] = {"frame_ms": round(statistics.median(frame), 2), "frame_ms_min": round(min(frame), 2),
                            "fps": round(1000 / statistics.median(frame), 1),
                            "frame_gflop": round((steps + 1) * forward_flops(cfg) / 1e9, 3)}
    engine.set_steps(0)
    result["per_steps"] = per_steps

    if engine.autoencoder is not None:
        latent = engine.gen_frame(walk, return_img=False)
        dec = timed(lambda: engine.autoencoder.decode(latent), device, args.repeats)
        result["decode_ms"] = round(statistics.median(dec), 2)
        end_to_end = timed(lambda: engine.gen_frame(walk), device, args.repeats)
        result["end_to_end_ms"] = round(statistics.median(end_to_end), 2)
        result["end_to_end_fps"] = round(1000 / statistics.median(end_to_end), 1)
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="waypoint-1-small",
                        help="'waypoint-1-small' (random weights), 'embedded', a folder or a repo id")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None)
    parser.add_argument("--layers", type=int, default=None, help="fewer layers (CPU smoke runs of big configs)")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup-frames", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
