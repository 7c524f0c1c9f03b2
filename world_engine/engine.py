"""``WorldEngine``: load a Waypoint-format world model and play it one frame at a time.

Each generated frame is a few Euler steps of rectified flow from noise to a clean latent, with the
KV cache frozen, then one "cache pass" at sigma 0 that writes the clean frame into the ring cache.
Everything that does not change within a frame (noise modulations per sigma, the control terms,
the prompt's keys and values) is computed once and reused by every pass.
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
import threading
from pathlib import Path
from typing import Any

import torch

from .config import KNOWN_MODELS, WorldConfig
from .controls import CtrlInput, ctrl_vector, validate_ctrl
from .hub import resolve_folder
from .model.dit import ControlContext, NoiseContext, PromptContext
from .model.kv_cache import RingKVCache
from .model.loading import load_autoencoder_folder, load_dit
from .model.prompt_encoder import load_prompt_encoder

EMBEDDED_MODEL = Path(__file__).parent / "embedded"
DEFAULT_PROMPT = "An explorable world"
MAX_PROMPT_CHARS = 2000


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_autoencoder(path_or_repo: str | Path, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None, base: Path | None = None):
    """Load an autoencoder folder or Hub repo: ``encode(img) -> latent``, ``decode(latent) -> image``."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    folder = resolve_folder(path_or_repo, base=base)
    return load_autoencoder_folder(folder, device, dtype)


class WorldEngine:
    """A playable world: ``set_prompt``, ``append_frame``, ``gen_frame``, ``reset``.

    ``model`` is a local folder or a Hugging Face repo id holding ``config.yaml`` and
    ``model.safetensors``; ``None`` loads the small model shipped in this package. ``overrides``
    replaces config values before anything is built (e.g. ``{"scheduler_sigmas": [1.0, 0.5, 0.0]}``).
    ``compile`` (default: on CUDA) runs the DiT forward through ``torch.compile`` with static shapes;
    the frame number never enters the graph, so it compiles once.
    """

    def __init__(self, model: str | Path | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, seed: int | None = None,
                 overrides: dict[str, Any] | None = None, compile: bool | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        if model is None:
            if not (EMBEDDED_MODEL / "config.yaml").is_file():
                raise FileNotFoundError(f"the embedded model is missing from this checkout ({EMBEDDED_MODEL})")
            model = EMBEDDED_MODEL
        self.folder = resolve_folder(model, allow_patterns=["config.yaml", "model.safetensors"])
        self.config = WorldConfig.from_yaml(self.folder / "config.yaml", overrides,
                                            defaults=KNOWN_MODELS.get(str(model)))
        self.model = load_dit(self.folder, self.config, self.device, self.dtype)
        self.model.fuse_for_inference()
        if compile is None:
            compile = self.device.type == "cuda"
        self._forward = torch.compile(self.model, fullgraph=True, dynamic=False) if compile else self.model
        self.autoencoder = None
        if self.config.ae_uri:
            self.autoencoder = load_autoencoder(self.config.ae_uri, self.device, self.dtype, base=self.folder)
        self._shared: dict[str, Any] = {"lock": threading.Lock()}  # lazy parts that forks share

        self.model_sigmas = list(self.config.scheduler_sigmas)  # the schedule the model ships with
        self._build_schedule()
        self._start_session(seed)

    @torch.inference_mode()
    def _build_schedule(self) -> None:
        """Noise modulations per sigma level and the Euler step sizes, in the engine dtype."""
        sigmas = torch.tensor(self.config.scheduler_sigmas, dtype=self.dtype, device=self.device)
        self._steps: list[tuple[NoiseContext, torch.Tensor]] = [
            (self.model.noise_context(sigmas[i].view(1, 1)), sigmas[i + 1] - sigmas[i])
            for i in range(len(sigmas) - 1)]
        self._clean = self.model.noise_context(sigmas[-1].view(1, 1))

    def set_scheduler_sigmas(self, sigmas: list[float]) -> None:
        """Change the sampling schedule (fewer steps: faster, softer); applies from the next frame."""
        self.config = dataclasses.replace(self.config, scheduler_sigmas=list(sigmas))
        self._build_schedule()

    def set_steps(self, steps: int) -> None:
        """Use ``steps`` evenly spaced Euler steps from sigma 1 to 0; 0 restores the model's schedule."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a whole number >= 0, got {steps!r}")
        self.set_scheduler_sigmas(self.model_sigmas if steps == 0 else
                                  [round(1.0 - i / steps, 6) for i in range(steps + 1)])

    def _start_session(self, seed: int | None) -> None:
        """Fresh per-session state: history, RNG, prompt, control buffer."""
        self.cache = RingKVCache(self.config, 1, self.device, self.dtype)
        self.frame_index = 0
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(seed if seed is not None else secrets.randbits(63))
        self.prompt: str | None = None
        self._prompt_ctx: PromptContext | None = None
        self._ctrl = torch.zeros(self.config.ctrl_dim)

    def fork(self, seed: int | None = None) -> "WorldEngine":
        """A new, empty session sharing this engine's weights (cheap: only the cache is new)."""
        other = copy.copy(self)
        other._start_session(seed)
        other._prompt_ctx, other.prompt = self._prompt_ctx, self.prompt
        return other

    # Prompt -------------------------------------------------------------------------------------
    @property
    def prompt_encoder(self):
        """The text encoder, loaded on first use and shared with every fork."""
        with self._shared["lock"]:  # sessions on several threads must not load it twice
            if "prompt_encoder" not in self._shared:
                folder = resolve_folder(self.config.prompt_encoder_uri, base=self.folder)
                self._shared["prompt_encoder"] = load_prompt_encoder(folder, self.device, self.dtype)
        return self._shared["prompt_encoder"]

    def set_prompt(self, text: str) -> None:
        """Condition the next frames on ``text`` (applies without a reset)."""
        if self.config.prompt_conditioning is None:
            raise RuntimeError("this model has no prompt conditioning")
        if not isinstance(text, str):
            raise ValueError(f"prompt must be a string, got {type(text).__name__}")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}")
        emb, pad_mask = self.prompt_encoder([text])
        self.set_prompt_embedding(emb, pad_mask)
        self.prompt = text

    @torch.inference_mode()
    def set_prompt_embedding(self, emb: torch.Tensor, pad_mask: torch.Tensor) -> None:
        """Use a precomputed prompt embedding ``[1, S, P]`` with ``pad_mask [1, S]`` (True = pad)."""
        if self.config.prompt_conditioning is None:
            raise RuntimeError("this model has no prompt conditioning")
        p = self.config.prompt_embedding_dim
        if not isinstance(emb, torch.Tensor) or emb.dim() != 3 or emb.shape[0] != 1 or emb.shape[2] != p:
            raise ValueError(f"prompt embedding must be a tensor of shape [1, S, {p}], got "
                             f"{list(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__}")
        if not isinstance(pad_mask, torch.Tensor) or pad_mask.dtype != torch.bool or \
                tuple(pad_mask.shape) != tuple(emb.shape[:2]):
            raise ValueError(f"pad_mask must be a bool tensor of shape {list(emb.shape[:2])}")
        if not torch.isfinite(emb).all():
            raise ValueError("prompt embedding contains NaN or inf")
        emb = emb.to(self.device, self.dtype).masked_fill(pad_mask.to(self.device)[..., None], 0)
        self._prompt_ctx = self.model.prompt_context(emb)
        self.prompt = None

    def _prompt_context(self) -> PromptContext | None:
        if self.config.prompt_conditioning is not None and self._prompt_ctx is None:
            self.set_prompt(DEFAULT_PROMPT)
        return self._prompt_ctx

    # Frames -------------------------------------------------------------------------------------
    def _control_context(self, ctrl: CtrlInput | None) -> ControlContext:
        ctrl = validate_ctrl(ctrl, self.config.n_buttons)
        vec = ctrl_vector(ctrl, self.config.n_buttons, out=self._ctrl)
        return self.model.control_context(vec.to(self.device).view(1, 1, -1))

    def _timestamps(self) -> torch.Tensor:
        return torch.full((1, 1), self.frame_index, dtype=torch.long, device=self.device)

    def _cache_pass(self, latent: torch.Tensor, control: ControlContext, prompt: PromptContext | None) -> None:
        self.cache.begin(self.frame_index, write=True)
        self._forward(latent, self._clean, self._timestamps(), control, prompt, cache=self.cache)
        self.cache.end()
        self.frame_index += 1

    def _check_latent(self, latent: Any, name: str) -> torch.Tensor:
        shape = self.config.latent_shape
        if not isinstance(latent, torch.Tensor) or tuple(latent.shape) != shape:
            got = list(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise ValueError(f"{name} must be a tensor of shape {list(shape)}, got {got}")
        if not latent.is_floating_point() or not torch.isfinite(latent).all():
            raise ValueError(f"{name} must be finite floating-point values")
        return latent.to(self.device, self.dtype).view(1, 1, *shape)

    @torch.inference_mode()
    def append_latent(self, latent: torch.Tensor, ctrl: CtrlInput | None = None) -> None:
        """Write a clean latent frame ``[C, H, W]`` into the history."""
        x = self._check_latent(latent, "latent")
        self._cache_pass(x, self._control_context(ctrl), self._prompt_context())

    def append_frame(self, img: Any, ctrl: CtrlInput | None = None) -> Any:
        """Encode an RGB image (uint8 ``[H, W, 3]``, any size) and write it into the history."""
        self.append_latent(self._require_autoencoder().encode(img), ctrl)
        return img

    @torch.inference_mode()
    def gen_frame(self, ctrl: CtrlInput | None = None, return_img: bool = True,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """Generate the next frame: uint8 ``[H, W, 3]``, or the latent ``[C, H, W]``."""
        if return_img:
            self._require_autoencoder()
        control = self._control_context(ctrl)
        prompt = self._prompt_context()
        if noise is None:
            x = torch.randn((1, 1, *self.config.latent_shape), generator=self.generator,
                            device=self.device, dtype=self.dtype)
        else:
            x = self._check_latent(noise, "noise")
        timestamps = self._timestamps()
        for noise_ctx, dsigma in self._steps:
            self.cache.begin(self.frame_index, write=False)
            x = x + dsigma * self._forward(x, noise_ctx, timestamps, control, prompt, cache=self.cache)
        self._cache_pass(x, control, prompt)
        latent = x[0, 0]
        return self.autoencoder.decode(latent) if return_img else latent.clone()

    def reset(self, seed: int | None = None) -> None:
        """Forget the history (the prompt stays); a ``seed`` restarts the noise sequence."""
        self.cache.reset()
        self.frame_index = 0
        if seed is not None:
            self.generator.manual_seed(seed)

    def _require_autoencoder(self):
        if self.autoencoder is None:
            raise ValueError("this model has no autoencoder (config has no ae_uri): it works on latents only; "
                             "use append_latent() and gen_frame(return_img=False)")
        return self.autoencoder
