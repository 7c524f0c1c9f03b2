"""Strict state-dict loading with errors that name the offending key and file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy ``state`` into ``module``: every key present, no extra key, every shape equal."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{source}: missing weight {missing[0]!r}{more}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(f"{source}: unexpected weight {unexpected[0]!r}{more} for this config")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(f"{source}: weight {key!r} has shape {list(state[key].shape)}, "
                             f"the config expects {list(value.shape)}")
    module.load_state_dict(state, strict=True)


def unshared_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict with every (possibly tied) tensor as its own contiguous copy, for safetensors."""
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
