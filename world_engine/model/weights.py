"""Model files: YAML configs read into dataclasses, and strict state-dict loading, with errors that
name the offending key and file."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn


def read_yaml_mapping(path: str | Path, section: str | None = None) -> dict[str, Any]:
    """The mapping in a YAML file (or under its top-level ``section``); ``ValueError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no {path.name}")
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f)
    if section is not None:
        values = values.get(section) if isinstance(values, dict) else None
    if not isinstance(values, dict):
        where = f"a top-level '{section}:' mapping" if section else "a mapping of config keys"
        raise ValueError(f"{path}: expected {where}")
    return values


def dataclass_from_yaml(cls: type[T], path: str | Path) -> T:
    """``cls(**mapping)`` for a YAML file whose keys are the dataclass's fields."""
    values = read_yaml_mapping(path)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def check_weight_shapes(expected: dict[str, list[int]], stored: dict[str, list[int]], source: str | Path) -> None:
    """Every expected key stored, no extra key, every shape equal; the error names the first offender."""
    missing = [k for k in expected if k not in stored]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{source}: missing weight {missing[0]!r}{more}")
    unexpected = [k for k in stored if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(f"{source}: unexpected weight {unexpected[0]!r}{more} for this config")
    for key, shape in expected.items():
        if list(stored[key]) != list(shape):
            raise ValueError(f"{source}: weight {key!r} has shape {list(stored[key])}, the config expects {list(shape)}")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy ``state`` into ``module``: every key present, no extra key, every shape equal."""
    check_weight_shapes({k: list(v.shape) for k, v in module.state_dict().items()},
                        {k: list(v.shape) for k, v in state.items()}, source)
    module.load_state_dict(state, strict=True)


def unshared_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict with every (possibly tied) tensor as its own contiguous copy, for safetensors."""
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def save_small_model(module: nn.Module, config: Any, folder: str | Path, config_name: str, weights_name: str) -> None:
    """Write a small shipped model's folder: its config dataclass as YAML and float16 weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / config_name, "w", encoding="utf-8") as f:
        yaml.safe_dump(asdict(config), f, sort_keys=False)
    save_file({k: v.detach().half().contiguous() for k, v in module.state_dict().items()}, folder / weights_name)


def load_small_model(module: nn.Module, folder: Path, weights_name: str, device: torch.device | str,
                     dtype: torch.dtype) -> nn.Module:
    """Load the weights written by ``save_small_model`` strictly into ``module``, ready for inference."""
    path = folder / weights_name
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {weights_name}")
    load_strict(module, {k: v.float() for k, v in load_file(path).items()}, path)
    return module.to(device, dtype).eval().requires_grad_(False)
