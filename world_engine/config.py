"""The Waypoint model config (``config.yaml``): parsing, defaults and validation.

One dataclass describes every checkpoint the engine serves, the released Waypoint models and the
embedded model alike; they differ only in these values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Architecture keys that identify a released checkpoint (its "fingerprint"); values the file does
# not state count at their WorldConfig defaults. Waypoint-1-Small and 1.1-Small share one.
FINGERPRINT_KEYS = ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_ratio", "channels", "height", "width",
                    "patch", "tokens_per_frame", "local_window", "global_window", "global_attn_period",
                    "global_attn_offset", "global_pinned_dilation", "n_buttons", "value_residual", "gated_attn",
                    "noise_conditioning", "prompt_conditioning", "prompt_conditioning_period",
                    "prompt_embedding_dim", "ctrl_conditioning_period")


def config_fingerprint(values: dict[str, Any]) -> str:
    """A short hash of a config's architecture (``FINGERPRINT_KEYS``), the same wherever the
    checkpoint lives: a Hub repo, its cache folder or a local copy."""
    defaults = {f.name: f.default for f in dataclasses.fields(WorldConfig)
                if f.default is not dataclasses.MISSING}
    arch = {}
    for key in FINGERPRINT_KEYS:
        value = values.get(key, defaults.get(key))
        if key == "n_kv_heads" and value is None:
            value = values.get("n_heads")
        if key == "patch" and value is not None:
            value = [int(v) for v in value]
        if key == "prompt_conditioning" and value is not None:
            value = "on"  # released configs spell it "cross_attention" or "cross_attn"
        arch[key] = value
    blob = json.dumps(arch, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class WorldConfig:
    """Architecture and sampling settings of a Waypoint-format world model."""

    d_model: int
    n_heads: int
    n_layers: int
    mlp_ratio: int
    channels: int
    height: int
    width: int
    tokens_per_frame: int
    local_window: int
    global_window: int
    global_attn_period: int
    global_pinned_dilation: int
    n_buttons: int
    ctrl_conditioning_period: int
    scheduler_sigmas: list[float]
    n_frames: int = 4096
    n_kv_heads: int | None = None
    patch: tuple[int, int] = (1, 1)
    global_attn_offset: int = 0
    value_residual: bool = False
    gated_attn: bool = False
    noise_conditioning: str | None = "wan"
    ctrl_conditioning: str | None = "mlp_fusion"
    ctrl_cond_dropout: float = 0.0
    prompt_conditioning: str | None = None
    prompt_conditioning_period: int | None = None
    prompt_embedding_dim: int | None = None
    prompt_cond_dropout: float = 0.0
    prompt_encoder_uri: str | None = "google/umt5-xl"
    ae_uri: str | None = None
    has_audio: bool = False
    # The control convention (defaults: the released Waypoint models, trained on raw per-frame
    # pointer deltas). The DiT reads the mouse as ``mouse * mouse_scale`` and, with
    # ``ctrl_fusion_norm: rms``, only the direction of the control embedding; ``none`` keeps its
    # magnitude, so a small turn stays small. The app maps pointer pixels to mouse units with
    # ``mouse_units_per_pixel`` and clamps to ``mouse_cap`` (the largest delta seen in training).
    mouse_scale: float = 1.0
    ctrl_fusion_norm: str = "rms"
    mouse_units_per_pixel: float = 1.0
    mouse_cap: float | None = None
    # Classifier-free guidance on the controls while sampling: each session keeps a second batch
    # row that sees the learned null control on every frame (as the control dropout trained it),
    # and each denoising step moves along ``null + ctrl_guidance * (cond - null)``. 1.0: off.
    ctrl_guidance: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        self.patch = tuple(self.patch)
        self.scheduler_sigmas = [float(s) for s in self.scheduler_sigmas]
        self.validate()

    # Derived sizes ----------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``[C, H, W]`` of one latent frame."""
        ph, pw = self.patch
        return (self.channels, self.height * ph, self.width * pw)

    @property
    def ctrl_dim(self) -> int:
        return self.n_buttons + 3

    def is_global_layer(self, layer: int) -> bool:
        offset = self.global_attn_offset % self.global_attn_period
        return (layer - offset) % self.global_attn_period == 0

    def layer_window(self, layer: int) -> tuple[int, int]:
        """``(window_frames, pinned_dilation)`` of a layer's KV cache."""
        if self.is_global_layer(layer):
            return self.global_window, self.global_pinned_dilation
        return self.local_window, 1

    def has_prompt_attn(self, layer: int) -> bool:
        return self.prompt_conditioning is not None and layer % self.prompt_conditioning_period == 0

    def has_ctrl_fusion(self, layer: int) -> bool:
        return layer % self.ctrl_conditioning_period == 0

    # Loading ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "WorldConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if values.get(k) is None]
        if missing:
            raise ValueError(f"model config is missing required keys: {', '.join(missing)}")
        known = {k: v for k, v in values.items() if k in names}
        extra = {k: v for k, v in values.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except TypeError as exc:
            raise ValueError(f"invalid model config: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None,
                  defaults: dict[str, Any] | None = None) -> "WorldConfig":
        """Read ``config.yaml``; ``defaults`` fill keys the file lacks (by default those of the
        released model with the same architecture, ``known_model_defaults``), ``overrides`` replace any."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path.parent}: no {path.name}")
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        if defaults is None:
            defaults = known_model_defaults({**values, **(overrides or {})})
        return cls.from_dict({**defaults, **values, **(overrides or {})})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.update(values.pop("extra"))
        values["patch"] = list(self.patch)
        return values

    def save(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)

    # Validation -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first impossible value."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"invalid model config: {message}")

        for key in ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_ratio", "channels", "height",
                    "width", "tokens_per_frame", "local_window", "global_window", "global_attn_period",
                    "global_pinned_dilation", "n_buttons", "ctrl_conditioning_period"):
            value = getattr(self, key)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                 f"{key} must be a positive integer, got {value!r}")
        need(self.d_model % self.n_heads == 0, f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        need(self.head_dim % 16 == 0, f"head dim {self.head_dim} must be a multiple of 16 (3-axis RoPE)")
        need(self.n_heads % self.n_kv_heads == 0,
             f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        need(self.tokens_per_frame == self.height * self.width,
             f"tokens_per_frame {self.tokens_per_frame} != height*width {self.height * self.width}")
        need(len(self.patch) == 2 and all(isinstance(p, int) and p > 0 for p in self.patch),
             f"patch must be two positive integers, got {self.patch!r}")
        need(self.global_window % self.global_pinned_dilation == 0,
             f"global_window {self.global_window} is not a multiple of global_pinned_dilation "
             f"{self.global_pinned_dilation}")
        need(len(self.scheduler_sigmas) >= 2, "scheduler_sigmas needs at least two levels")
        need(self.scheduler_sigmas[-1] == 0.0, "scheduler_sigmas must end with 0.0")
        need(all(a > b for a, b in zip(self.scheduler_sigmas, self.scheduler_sigmas[1:])),
             f"scheduler_sigmas must be strictly decreasing, got {self.scheduler_sigmas}")
        need(all(0.0 <= s <= 1.0 for s in self.scheduler_sigmas), "scheduler_sigmas must lie in [0, 1]")
        need(not self.has_audio, "audio models are not supported")
        need(self.ctrl_fusion_norm in ("rms", "none"),
             f"ctrl_fusion_norm must be 'rms' or 'none', got {self.ctrl_fusion_norm!r}")
        for key in ("mouse_scale", "mouse_units_per_pixel"):
            value = getattr(self, key)
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e6,
                 f"{key} must be a positive number, got {value!r}")
        need(isinstance(self.ctrl_guidance, (int, float)) and not isinstance(self.ctrl_guidance, bool)
             and 0 < self.ctrl_guidance <= 20, f"ctrl_guidance must be a number in (0, 20], got {self.ctrl_guidance!r}")
        need(self.ctrl_guidance == 1 or self.ctrl_conditioning is not None,
             "ctrl_guidance needs control conditioning (its null control embedding)")
        need(self.mouse_cap is None or (isinstance(self.mouse_cap, (int, float)) and 0 < self.mouse_cap < 1e6),
             f"mouse_cap must be a positive number or null, got {self.mouse_cap!r}")
        if self.prompt_conditioning is not None:
            need(isinstance(self.prompt_conditioning_period, int) and self.prompt_conditioning_period > 0,
                 "prompt_conditioning_period must be a positive integer when prompt conditioning is on")
            need(isinstance(self.prompt_embedding_dim, int) and self.prompt_embedding_dim > 0
                 and self.prompt_embedding_dim % self.head_dim == 0,
                 f"prompt_embedding_dim {self.prompt_embedding_dim} must be a positive multiple of the "
                 f"head dim {self.head_dim}")


WAYPOINT_1_SMALL_ARCH: dict[str, Any] = {
    "d_model": 2560, "n_heads": 40, "n_kv_heads": 20, "n_layers": 22, "mlp_ratio": 5, "channels": 16,
    "height": 16, "width": 16, "patch": [2, 2], "tokens_per_frame": 256, "local_window": 16,
    "global_window": 128, "global_attn_period": 4, "global_attn_offset": 0, "global_pinned_dilation": 8,
    "n_buttons": 256, "value_residual": False, "gated_attn": True, "noise_conditioning": "wan",
    "prompt_conditioning": "cross_attention", "prompt_conditioning_period": 3, "prompt_embedding_dim": 2048,
    "ctrl_conditioning_period": 3,
}

# Values that released checkpoints leave out of their config.yaml, keyed by config_fingerprint.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    config_fingerprint(WAYPOINT_1_SMALL_ARCH): {   # Overworld/Waypoint-1-Small and Waypoint-1.1-Small
        "ae_uri": "OpenWorldLabs/owl_vae_f16_c16_distill_v0_nogan",
        "prompt_encoder_uri": "google/umt5-xl",
    },
}


def known_model_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Defaults for a config's missing keys, looked up by its fingerprint (empty if unknown)."""
    return dict(KNOWN_MODELS.get(config_fingerprint(values), {}))
