"""Resumable training checkpoints as safetensors shards of at most 12 MiB plus a JSON index.

A checkpoint is a folder: ``index.json`` (step, stage metadata, which shard holds which tensor)
and ``shard-XX.safetensors``. Weights are written as float32 so a resumed CPU run continues
exactly; optimizer state is not kept (runs restart AdamW with a short warmup, as the recipe says).
The folder is replaced atomically, so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MAX_SHARD_BYTES = 12 * 2**20


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` (name -> tensor) in shards and ``meta`` into ``folder``."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, value in tensors.items():
        value = value.detach().float().cpu().clone().contiguous()  # clone: tied weights share storage
        nbytes = value.numel() * 4
        if nbytes > MAX_SHARD_BYTES:
            raise ValueError(f"tensor {name!r} ({nbytes} bytes) exceeds the {MAX_SHARD_BYTES}-byte shard limit")
        if size + nbytes > MAX_SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = value
        size += nbytes
    where = {}
    for i, shard in enumerate(shards):
        save_file(shard, tmp / f"shard-{i:02d}.safetensors")
        where.update({name: i for name in shard})
    with open(tmp / "index.json", "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "shards": len(shards), "tensors": where}, f, indent=1, default=str)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint folder written by :func:`save_checkpoint`."""
    with open(folder / "index.json", encoding="utf-8") as f:
        index = json.load(f)
    tensors: dict[str, torch.Tensor] = {}
    for i in range(index["shards"]):
        tensors.update(load_file(folder / f"shard-{i:02d}.safetensors"))
    return tensors, index["meta"]


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}
