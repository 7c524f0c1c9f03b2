"""``WorldEngine``: load a Waypoint-format world model and play it one frame at a time.

Each generated frame is a few Euler steps of rectified flow from noise to a clean latent, with the
KV cache frozen, then one "cache pass" at sigma 0 that writes the clean frame into the ring cache.
Everything that does not change within a frame (noise modulations per sigma, the control terms,
the prompt's keys and values) is computed once and reused by every pass.

Where a frame is made: ``gen_frame`` = ``frame_conditions`` (controls, prompt, timestamp) ->
``denoise_step`` per sigma level -> the cache pass -> the autoencoder's ``decode``. Every pass is
one call of the DiT's flat inference entry (``DiTStep``: tensors in, velocity out, the KV cache
written in place), eager, ``torch.compile``'d, or replaced by an AOTInductor package on ZeroGPU. A
``WorldEngine`` is a ``WorldSource`` and an ``InteractiveWorld`` (``world_engine.protocol``).

Batch rows: a pass may carry several rows. A session guided on its controls (``ctrl_guidance``)
has two, the second under the learned null control; ``gen_frames`` stacks the rows of several
sessions of one engine, each session attending to its own cache (``_pass``).

History: every frame written into the cache is also kept as its clean latent (with its controls,
prompt and the noise generator's position) in a bounded ring, ``keep_history``. ``snapshot`` is a
point of that history; ``restore`` runs the cache pass again over the newest ``receptive_frames``
kept latents, which rebuilds the KV cache bit for bit, so a rewound session makes the same frames
under the same noise. No KV cache is ever copied or stored.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import secrets
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from .batching import SessionBatcher
from .config import WorldConfig
from .controls import CtrlInput, ctrl_vector, validate_ctrl
from .hub import resolve_folder
from .model.dit import ATTENTION_BACKENDS, DiTStep, WorldDiT
from .model.kv_cache import RingKVCache
from .model.loading import load_autoencoder_folder
from .model.prompt_encoder import load_prompt_encoder
from .protocol import ControlConvention
from .transfer import PendingFrame

EMBEDDED_MODEL = Path(__file__).parent / "embedded"
DEFAULT_PROMPT = "An explorable world"
MAX_PROMPT_CHARS = 2000
CPU_INDUCTOR_OPTIONS = {"freezing": True, "cpp_wrapper": True}   # see WorldEngine._compiled_parts
DEFAULT_HISTORY_FRAMES = 600   # frames kept for snapshots: 30 s at 20 fps
MAX_RESTORE_FRAMES = 256       # a restore re-primes at most this many frames (one DiT pass each)
RNG_CHECKPOINT_DRAWS = 32      # the noise generator's state is saved once per this many draws


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_attention(device: torch.device, compiled: bool) -> str:
    """``flex`` where it is a fused kernel (compiled, on CUDA), else ``sdpa`` with the boolean mask."""
    return "flex" if device.type == "cuda" and compiled else "sdpa"


def load_autoencoder(path_or_repo: str | Path, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None, base: Path | None = None):
    """Load an autoencoder folder or Hub repo: ``encode(img) -> latent``, ``decode(latent) -> image``."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    folder = resolve_folder(path_or_repo, base=base)
    return load_autoencoder_folder(folder, device, dtype)


def load_inference_dit(folder: Path, config: WorldConfig, device: torch.device, dtype: torch.dtype) -> WorldDiT:
    """The DiT in ``dtype`` on ``device``, weights streamed from ``model.safetensors`` one tensor at
    a time (no full state dict in memory next to the model), Q/K/V fused in place.

    Built on the meta device, so nothing is initialised twice; the noise conditioner stays float32
    and the RoPE tables stay float32/float64 (``WorldDiT._apply``).
    """
    path = folder / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no model.safetensors")
    with torch.device("meta"):
        model = WorldDiT(config)
    model.to(dtype)
    model.denoise_step_emb.float()
    model.to_empty(device=device)
    model.tie_weights()
    model.reset_buffers()
    model.load_checkpoint(path)
    model.fuse_for_inference()
    return model.eval().requires_grad_(False)


class _Upload:
    """A per-frame host input (controls, noise) and its copy on the device.

    On CUDA the host side is pinned and the copy asynchronous: refilling waits only for that copy to
    have left the buffer (an event), never for the device. Created at the first frame, so a process
    that only builds engines (ZeroGPU's main process) never touches the CUDA runtime.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.host = torch.zeros(shape, dtype=torch.float32, pin_memory=cuda)
        self.device = None if device.type == "cpu" else torch.zeros(shape, dtype=torch.float32, device=device)
        self.event = torch.cuda.Event() if cuda else None

    def fill(self) -> torch.Tensor:
        """The host buffer, free to overwrite."""
        if self.event is not None:
            self.event.synchronize()
        return self.host

    def send(self) -> torch.Tensor:
        """The buffer's values on the device."""
        if self.device is None:
            return self.host
        self.device.copy_(self.host, non_blocking=self.event is not None)
        if self.event is not None:
            self.event.record()
        return self.device


class FrameConditions(NamedTuple):
    """What every pass of one frame shares, as the DiT's flat entry takes it: the control terms of
    the fusion layers, the prompt's keys and values (None without prompt conditioning), the RoPE
    table of the frame's position and its timestamp. Valid for the next frame only."""

    control: torch.Tensor
    prompt: torch.Tensor | None
    rope: torch.Tensor
    timestamps: torch.Tensor


@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class KeptFrame:
    """One frame of a session's kept history: what its cache pass took, so a restore can run it
    again. Never written after it is made, so snapshots share it instead of copying it."""

    index: int                          # its timestamp
    latent: torch.Tensor                # the clean latent ``[C, H, W]`` written into the cache
    ctrl: CtrlInput                     # the controls it was made under
    prompt: str | None                  # the prompt in force (None: set as an embedding)
    prompt_ctx: torch.Tensor | None     # that prompt's keys and values (None in a portable copy)
    rng: torch.Tensor                   # the noise generator's newest checkpoint state ...
    draws: int                          # ... and the noise draws since it, this frame's included


@dataclasses.dataclass(frozen=True, eq=False)
class WorldSnapshot:
    """A point of a session to come back to (``WorldEngine.snapshot`` / ``restore``).

    It holds the kept latent history up to that point (``frames``, oldest first), the frame index
    the next frame gets, the prompt in force and the noise generator's state, never a KV cache: a
    restore rebuilds the cache by running the cache pass again over the newest kept frames. The
    frames are shared with the session, so taking one costs a tuple of references.
    """

    model: str                          # which model's session it is (restore refuses another's)
    frame_index: int
    start_index: int | None             # the session's first frame (a restore reaching it is exact)
    frames: tuple[KeptFrame, ...]
    rng: torch.Tensor
    draws: int
    prompt: str | None
    prompt_ctx: torch.Tensor | None
    prime: int                          # how many of the newest frames a restore runs again
    exact: bool                         # restoring gives bit-identical frames under the same noise

    def portable(self) -> "WorldSnapshot":
        """A copy for another process with just what a restore needs: the frames it re-primes, on
        the host, and prompts as text (re-encoded on restore). It pickles."""
        kept = self.frames[len(self.frames) - self.prime:]
        if any(f.prompt is None and f.prompt_ctx is not None for f in kept) or \
                (self.prompt is None and self.prompt_ctx is not None):
            raise ValueError("a prompt set as an embedding cannot leave the process; set it as text")
        host = tuple(dataclasses.replace(f, latent=f.latent.cpu(), prompt_ctx=None) for f in kept)
        return dataclasses.replace(self, frames=host, prompt_ctx=None)


class WorldEngine:
    """A playable world: ``set_prompt``, ``append_frame``, ``gen_frame``, ``reset``.

    ``model`` is a local folder or a Hugging Face repo id holding ``config.yaml`` and
    ``model.safetensors``; ``None`` loads the small model shipped in this package. ``overrides``
    replaces config values before anything is built (e.g. ``{"scheduler_sigmas": [1.0, 0.5, 0.0]}``).
    ``compile`` (default: on CUDA) runs the DiT forward through ``torch.compile`` with static shapes;
    the frame number never enters the graph, so it compiles once.

    ``frame_index`` is the timestamp the next frame gets (frames written into this session so far).
    An empty session may set it to start later in time: rotary positions are relative, so only the
    absolute timestamps change.

    ``snapshot(frames_back)`` / ``restore(snapshot)`` go back into the kept history (the newest
    ``DEFAULT_HISTORY_FRAMES`` frames unless ``keep_history`` says otherwise); see ``WorldSnapshot``.
    """

    def __init__(self, model: str | Path | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, seed: int | None = None,
                 overrides: dict[str, Any] | None = None, compile: bool | str | None = None,
                 attention: str | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        if model is None:
            if not (EMBEDDED_MODEL / "config.yaml").is_file():
                raise FileNotFoundError(f"the embedded model is missing from this checkout ({EMBEDDED_MODEL})")
            model = EMBEDDED_MODEL
        self.folder = resolve_folder(model, allow_patterns=["config.yaml", "model.safetensors"])
        # Defaults for keys a released config.yaml leaves out follow the checkpoint's own config
        # (config.known_model_defaults), wherever the folder lives.
        self.config = WorldConfig.from_yaml(self.folder / "config.yaml", overrides)
        self.model = load_inference_dit(self.folder, self.config, self.device, self.dtype)
        if compile is None:
            compile = self.device.type == "cuda"
        self.attention = attention or default_attention(self.device, bool(compile))
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {self.attention!r}: use one of {ATTENTION_BACKENDS}")
        # The flat inference entry every pass goes through: eager, torch.compile'd, or (ZeroGPU)
        # replaced by an AOTInductor package (its ``forward`` is patched; forks share the module).
        self.step_module = DiTStep(self.model, self.attention)
        # Lazy parts that forks share; "step" is the flat entry as every pass calls it, so compiling
        # it later (``compile_step``) upgrades every session of the engine at once.
        self._shared: dict[str, Any] = {"lock": threading.Lock(), "compile_lock": threading.Lock(),
                                        "step": self.step_module}
        self.autoencoder = None
        if self.config.ae_uri:
            self.autoencoder = load_autoencoder(self.config.ae_uri, self.device, self.dtype, base=self.folder)
        if compile:
            mode = compile if isinstance(compile, str) else "default"
            self._install(*self._compiled_parts(mode), mode)

        # Guided sessions carry a second batch row under the null control (WorldConfig.ctrl_guidance).
        self._rows = 1 if self.config.ctrl_guidance == 1 else 2
        self._null_control = self.model.null_control_terms() if self._rows == 2 else None
        self.model_sigmas = list(self.config.scheduler_sigmas)  # the schedule the model ships with
        self._build_schedule()
        self._model_key = f"{self.folder}:{self.config.n_layers}:{list(self.config.latent_shape)}"
        self.restore_frames = min(self.receptive_frames, MAX_RESTORE_FRAMES)
        self._history_frames = DEFAULT_HISTORY_FRAMES
        self._start_session(seed)

    @property
    def _step(self):
        return self._shared["step"]

    def _compiled_parts(self, mode: str) -> tuple[Any, Any]:
        """The flat entry and the decoder wrapped in ``torch.compile`` (compiled at their first call).

        On a CPU, inductor folds the weights into the code and prepacks them (``freezing``) and calls
        its kernels from C++ (``cpp_wrapper``): a 64x64 frame is hundreds of tiny ops, so the per-op
        overhead of eager PyTorch, not arithmetic, is most of its time.
        """
        options = CPU_INDUCTOR_OPTIONS if self.device.type == "cpu" else None
        step = torch.compile(self.step_module, fullgraph=True, dynamic=False,
                             mode=None if mode == "default" else mode, options=options)
        decoder = getattr(self.autoencoder, "decoder", None)
        if isinstance(decoder, torch.nn.Module):   # Waypoint's decode is ~0.7 TFLOP of convolutions
            return step, torch.compile(decoder, dynamic=False, options=options)
        return step, None

    def _install(self, step: Any, decoder: Any, mode: str) -> None:
        self._shared["step"] = step
        if decoder is not None:
            self.autoencoder.decoder = decoder
        self._shared["compile_mode"] = mode

    @property
    def compile_mode(self) -> str | None:
        """How the passes run now, for this engine and all its forks: None (eager) or the
        ``torch.compile`` mode ("default", "reduce-overhead", ...)."""
        return self._shared.get("compile_mode")

    @torch.inference_mode()
    def compile_step(self, keep_if_faster: bool = False) -> bool:
        """Compile this engine's passes and decoder now, for it and every fork, running ones included.

        Blocks while compiling (on a CPU: minutes the first time, seconds from inductor's cache), so
        a server calls it from a background thread and keeps serving the eager code meanwhile: the
        compiled code is traced on a probe session and published only once it has run. With
        ``keep_if_faster`` (for a CPU, where timing needs no device sync) a probe frame is timed both
        ways first and the eager code stays if the compiled one is more than 10% slower: on some
        CPUs inductor's C++ loses to eager PyTorch. Returns whether the compiled code runs now.
        """
        with self._shared["compile_lock"]:    # not "lock": sessions must not wait minutes for it
            if self._shared["step"] is not self.step_module:
                return self.compile_mode is not None
            step, decoder = self._compiled_parts("default")
            eager_decoder = self.autoencoder.decoder if decoder is not None else None   # time like with like
            batcher = self._shared.get("batcher")
            probes = [self.fork(seed=0) for _ in range(batcher.max_batch if batcher else 1)]
            try:
                x = torch.zeros((1, 1, *self.config.latent_shape), device=self.device, dtype=self.dtype)
                conditions = [p.frame_conditions(CtrlInput()) for p in probes]
                for n in range(1, len(probes) + 1):   # every batch size the batcher makes: one graph each
                    _pass(probes[:n], [x] * n, conditions[:n], 0, write=False, step_fn=step)
                if decoder is not None:
                    decoder(x[0])

                def probe_frame(step_fn: Any, decode: Any) -> None:
                    _pass(probes[:1], [x], conditions[:1], 0, write=False, step_fn=step_fn)
                    if decode is not None:
                        decode(x[0])

                if keep_if_faster and (_median_seconds(lambda: probe_frame(step, decoder))
                                       > 1.1 * _median_seconds(lambda: probe_frame(self.step_module, eager_decoder))):
                    return False
            finally:
                for p in probes:
                    p.close()
            self._install(step, decoder, "default")
            return True

    @property
    def convention(self) -> ControlConvention:
        """The model's control convention, as its config states it."""
        cfg = self.config
        return ControlConvention(n_buttons=cfg.n_buttons, mouse_units_per_pixel=cfg.mouse_units_per_pixel,
                                 mouse_cap=cfg.mouse_cap, prompted=cfg.prompt_conditioning is not None,
                                 takes_images=self.autoencoder is not None)

    @torch.inference_mode()
    def _build_schedule(self) -> None:
        """Per sigma level: the stacked noise modulations and the Euler step size, in the engine dtype."""
        sigmas = torch.tensor(self.config.scheduler_sigmas, dtype=self.dtype, device=self.device)
        self._steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = [
            (*self.model.noise_mods(sigmas[i].view(1, 1)), sigmas[i + 1] - sigmas[i])
            for i in range(len(sigmas) - 1)]
        self._clean = self.model.noise_mods(sigmas[-1].view(1, 1))

    @property
    def n_steps(self) -> int:
        """Denoising steps per frame under the current schedule."""
        return len(self._steps)

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
        """Fresh per-session state: history, RNG, prompt, control buffer.

        Noise comes from a CPU generator (the same seed gives the same noise on every device) and
        the KV cache and the upload buffers are made at the first frame: building an engine and
        forking sessions touch no device runtime (ZeroGPU builds engines in a process without a GPU).
        """
        self._cache: RingKVCache | None = None
        self._closed = False
        self._uploads: dict[str, _Upload] = {}
        self.frame_index = 0
        self.generator = torch.Generator("cpu")
        self.generator.manual_seed(seed if seed is not None else secrets.randbits(63))
        self.prompt: str | None = None
        self._prompt_ctx: torch.Tensor | None = None
        self._rows_prompt: tuple[torch.Tensor, torch.Tensor] | None = None   # (prompt K/V, one copy per row)
        self._forget_history()

    def _forget_history(self) -> None:
        """An empty kept history; the noise generator's state as it is now is its first checkpoint."""
        self._kept: deque[KeptFrame] = deque(maxlen=self._history_frames)
        self._start_index: int | None = None
        self._rng_state, self._rng_draws = self.generator.get_state(), 0

    def fork(self, seed: int | None = None) -> "WorldEngine":
        """A new, empty session sharing this engine's weights (cheap: only the cache is new)."""
        other = copy.copy(self)
        other._start_session(seed)
        other._prompt_ctx, other.prompt = self._prompt_ctx, self.prompt
        return other

    def close(self) -> None:
        """Free this session's history (its KV cache); the weights stay with the other sessions."""
        self._cache = None
        self._kept.clear()
        self._closed = True

    def _history(self) -> RingKVCache:
        if self._closed:
            raise RuntimeError("this session is closed")
        if self._cache is None:
            with torch.inference_mode(False):  # plain tensors: written in place by exported/compiled steps too
                self._cache = RingKVCache(self.config, self._rows, self.device, self.dtype)
            if self.compile_mode == "reduce-overhead":  # CUDA graphs replay in place on a static cache arena
                kv, masks, write_index = self._cache.flat()
                for t in (*kv, *masks, *write_index):
                    torch._dynamo.mark_static_address(t)
        return self._cache

    def _upload(self, name: str, shape: tuple[int, ...]) -> _Upload:
        if name not in self._uploads:
            self._uploads[name] = _Upload(shape, self.device)
        return self._uploads[name]

    # Prompt -------------------------------------------------------------------------------------
    @property
    def prompt_encoder(self):
        """The text encoder, loaded once (``load_prompt_encoder``) and shared with every fork."""
        return self.load_prompt_encoder()

    def load_prompt_encoder(self):
        """Load the prompt encoder now (warm-up does, so no GPU call pays for it); None without
        prompt conditioning. UMT5 loads in the engine dtype (bf16 on a GPU)."""
        if self.config.prompt_conditioning is None:
            return None
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
        self._prompt_ctx = self.model.prompt_kv(emb)
        self.prompt = None

    def _prompt_context(self) -> torch.Tensor | None:
        if self.config.prompt_conditioning is not None and self._prompt_ctx is None:
            self.set_prompt(DEFAULT_PROMPT)
        return self._prompt_ctx

    # Frames -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def frame_conditions(self, ctrl: CtrlInput | None = None) -> FrameConditions:
        """The terms every pass of the next frame shares, under controls ``ctrl``."""
        ctrl = validate_ctrl(ctrl, self.config.n_buttons)
        upload = self._upload("ctrl", (self.config.ctrl_dim,))
        ctrl_vector(ctrl, self.config.n_buttons, out=upload.fill())
        control = self.model.control_terms(upload.send().view(1, 1, -1))
        prompt = self._prompt_rows(self._prompt_context())
        if self._rows == 2:   # row 1: the null control, same prompt
            control = torch.cat((control, self._null_control), dim=1)
        timestamps = torch.full((1, 1), self.frame_index, dtype=torch.long, device=self.device)
        return FrameConditions(control, prompt, self.model.rope_table(timestamps), timestamps)

    def _prompt_rows(self, prompt: torch.Tensor | None) -> torch.Tensor | None:
        """The prompt's keys and values for every row of this session, copied once per prompt
        (not per frame: for Waypoint's 512 UMT5 tokens the copy is tens of MB)."""
        if prompt is None or self._rows == 1:
            return prompt
        if self._rows_prompt is None or self._rows_prompt[0] is not prompt:
            self._rows_prompt = (prompt, prompt.expand(-1, -1, self._rows, -1, -1, -1).contiguous())
        return self._rows_prompt[1]

    def step_inputs(self, x: torch.Tensor, conditions: FrameConditions, step: int | None,
                    write: bool) -> tuple:
        """The arguments of the flat entry (``DiTStep``) for one pass of the next frame: denoising
        step ``step`` (None: the cache pass at sigma 0). Brackets the history for that pass.
        ``x [1, 1, C, H, W]`` is the session's latent; a guided session passes it to both rows."""
        mods, out_mod = self._clean if step is None else self._steps[step][:2]
        if self._rows > 1:
            x = x.expand(self._rows, *x.shape[1:]).contiguous()
        cache = self._history()
        cache.begin(self.frame_index, write=write)
        kv, masks, write_index = cache.flat()
        return (x, mods, out_mod, conditions.control, conditions.prompt, conditions.rope, kv, masks, write_index)

    # Ahead-of-time compilation of the flat entry ---------------------------------------------
    def example_step_inputs(self) -> tuple:
        """Arguments of one real denoising pass of a fresh probe session (for ``torch.export``)."""
        probe = self.fork(seed=0)
        conditions = probe.frame_conditions(CtrlInput())
        x = torch.zeros((1, 1, *self.config.latent_shape), device=self.device, dtype=self.dtype)
        return probe.step_inputs(x, conditions, 0, write=False)

    def export_step(self, args: tuple | None = None, kwargs: dict | None = None):
        """``torch.export`` of the flat entry (``step_module``) with static shapes, from ``args``
        (e.g. captured from a real call) or from ``example_step_inputs``. The K/V buffers are inputs
        that the program writes in place, never constants of it."""
        if args is None and not kwargs:
            args = self.example_step_inputs()
        with torch.no_grad():
            return torch.export.export(self.step_module, tuple(args or ()), kwargs=dict(kwargs or {}))

    def step_signature(self) -> dict[str, Any]:
        """What the compiled code of the flat entry depends on besides torch and the GPU: the
        architecture, the dtype, the attention backend and the source of the DiT and its cache."""
        from .model import dit, kv_cache

        source = hashlib.sha256()
        for module in (dit, kv_cache):
            source.update(Path(module.__file__).read_bytes())
        cfg = {k: v for k, v in self.config.to_dict().items()
               if k not in ("scheduler_sigmas", "ae_uri", "prompt_encoder_uri", "mouse_units_per_pixel", "mouse_cap")}
        return {"config": cfg, "dtype": str(self.dtype), "attention": self.attention,
                "source": source.hexdigest()[:16]}

    @torch.inference_mode()
    def denoise_step(self, x: torch.Tensor, conditions: FrameConditions, step: int) -> torch.Tensor:
        """One Euler step of the next frame: ``x`` (``[1, 1, C, H, W]``, at sigma level ``step``)
        moved to the next level. One DiT forward that reads the history and leaves it as it is."""
        return self._euler(x, _pass([self], [x], [conditions], step, write=False)[0], step)

    def _euler(self, x: torch.Tensor, v: torch.Tensor, step: int) -> torch.Tensor:
        """``x`` moved one level down along the pass's velocity ``v`` (its rows: conditioned, null)."""
        if self._rows == 2:   # classifier-free guidance on the controls
            v = torch.lerp(v[1:], v[:1], self.config.ctrl_guidance)
        return x + self._steps[step][2] * v

    def _cache_pass(self, latent: torch.Tensor, conditions: FrameConditions) -> None:
        _pass([self], [latent], [conditions], None, write=True)
        self._written()

    def _written(self) -> None:
        """After a cache pass: its ring slots now hold this frame, the next frame gets the next index."""
        self._history().end()
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
        self._cache_pass(x, self.frame_conditions(ctrl))
        self._keep(x, ctrl, drew=False)

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
        x = None if noise is None else self._check_latent(noise, "noise")
        latent = _generate([self], [ctrl], [x])[0]
        return self.autoencoder.decode(latent) if return_img else latent.clone()

    def next_frame(self, ctrl: CtrlInput | None = None) -> np.ndarray:
        """``gen_frame`` as a player takes it: uint8 ``[H, W, 3]`` on the host; batched with the
        engine's other sessions that ask at the same time once ``batch_sessions`` is on."""
        return self.next_frame_async(ctrl).result()

    def next_frame_async(self, ctrl: CtrlInput | None = None) -> PendingFrame:
        """``next_frame`` without waiting for the copy to the host: on CUDA the frame's kernels are
        queued and its copy into pinned memory starts behind them, so the caller can queue the next
        frame while this one downloads and is encoded (``PendingFrame.result`` waits for it)."""
        batcher = self._shared.get("batcher")
        if batcher is not None:
            return PendingFrame(batcher.next_frame(self, ctrl))
        return PendingFrame(self.gen_frame(ctrl))

    def batch_sessions(self, max_batch: int = 2, gather_s: float = 0.025,
                       run_on: Callable[..., Any] | None = None) -> SessionBatcher | None:
        """From now on, sessions of this engine (it and every fork) that call ``next_frame`` at about
        the same time share one forward per pass (``SessionBatcher``, which runs it through
        ``run_on(fn, *args)`` when given); ``max_batch`` 1 turns it off."""
        self._shared["batcher"] = SessionBatcher(max_batch, gather_s, run_on) if max_batch > 1 else None
        return self._shared["batcher"]

    @property
    def batcher(self) -> SessionBatcher | None:
        """The batcher ``next_frame`` goes through (``batch_sessions``), if any."""
        return self._shared.get("batcher")

    def reset(self, seed: int | None = None) -> None:
        """Forget the history (the prompt stays); a ``seed`` restarts the noise sequence."""
        if self._closed:
            raise RuntimeError("this session is closed")
        if self._cache is not None:
            self._cache.reset()
        self.frame_index = 0
        if seed is not None:
            self.generator.manual_seed(seed)
        self._forget_history()

    # History: snapshots and restores --------------------------------------------------------
    @property
    def receptive_frames(self) -> int:
        """Frames a restore must re-run for bit-identical results: the K/V a layer keeps for a frame
        depend on the frames every layer below attended to, so the cache at a point is a function
        of at most the sum of all layers' windows of newest latents (48 for the embedded model)."""
        return sum(self.config.layer_window(layer)[0] for layer in range(self.config.n_layers))

    def keep_history(self, frames: int) -> None:
        """Keep the newest ``frames`` frames (a ring; default ``DEFAULT_HISTORY_FRAMES``) for
        ``snapshot``: each costs its latent and a few references."""
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames must be a whole number >= 1, got {frames!r}")
        self._history_frames = frames
        self._kept = deque(self._kept, maxlen=frames)

    @property
    def rewind_limit(self) -> int:
        """How many frames back ``snapshot`` can reach now (the kept frames but the oldest)."""
        return max(len(self._kept) - 1, 0)

    def _draw_noise(self, out: torch.Tensor) -> None:
        torch.randn(out.shape, generator=self.generator, out=out)

    def _keep(self, x: torch.Tensor, ctrl: CtrlInput | None, drew: bool) -> None:
        """Add the frame just written (latent ``x`` ``[1, 1, C, H, W]``) to the kept history: a
        latent copy and references, a few microseconds (the generator's state is read once per
        ``RNG_CHECKPOINT_DRAWS`` draws, not per frame)."""
        if drew:
            self._rng_draws += 1
            if self._rng_draws >= RNG_CHECKPOINT_DRAWS:
                self._rng_state, self._rng_draws = self.generator.get_state(), 0
        index = self.frame_index - 1
        if self._start_index is None:
            self._start_index = index
        c = ctrl or CtrlInput()
        self._kept.append(KeptFrame(index, x[0, 0].clone(), CtrlInput(set(c.button), tuple(c.mouse), c.scroll_wheel),
                                    self.prompt, self._prompt_ctx, self._rng_state, self._rng_draws))

    def snapshot(self, frames_back: int = 0) -> WorldSnapshot:
        """The session as it is now, or as it was ``frames_back`` frames ago (up to
        ``rewind_limit``): the kept frames up to that point, its frame index, the prompt in force
        there and the noise generator's state, so a ``restore`` continues with the same noise."""
        if self._closed:
            raise RuntimeError("this session is closed")
        if isinstance(frames_back, bool) or not isinstance(frames_back, int) or \
                not 0 <= frames_back <= self.rewind_limit:
            raise ValueError(f"frames_back must be a whole number from 0 to {self.rewind_limit} "
                             f"(the kept history), got {frames_back!r}")
        frames = tuple(itertools.islice(self._kept, len(self._kept) - frames_back))
        if frames_back == 0:
            rng, draws, prompt, ctx = self._rng_state, self._rng_draws, self.prompt, self._prompt_ctx
        else:
            last = frames[-1]
            rng, draws, prompt, ctx = last.rng, last.draws, last.prompt, last.prompt_ctx
        prime = frames[max(len(frames) - self.restore_frames, 0):]
        exact = not frames or len(prime) >= self.receptive_frames or prime[0].index == self._start_index
        return WorldSnapshot(self._model_key, self.frame_index - frames_back, self._start_index, frames, rng,
                             draws, prompt, ctx, len(prime), exact)

    @torch.inference_mode()
    def restore(self, snapshot: WorldSnapshot) -> None:
        """Go back to ``snapshot``: re-prime the cache by running the cache pass over its newest
        ``restore_frames`` kept frames (each with its own controls and prompt), then take its
        frame index, prompt, kept history and noise state. With ``snapshot.exact``, frames made
        afterwards are bit-identical to those made after the snapshot was taken, noise for noise
        (on the same kernels: a session switched from eager to compiled in between, or one whose
        frames were made in a batch with others, ``gen_frames``, is only close).
        Costs one DiT forward per re-primed frame."""
        if self._closed:
            raise RuntimeError("this session is closed")
        if not isinstance(snapshot, WorldSnapshot):
            raise ValueError(f"expected a WorldSnapshot, got {type(snapshot).__name__}")
        if snapshot.model != self._model_key:
            raise ValueError("that snapshot was taken of another model's session")
        frames = snapshot.frames
        if any(b.index != a.index + 1 for a, b in zip(frames, frames[1:])) or \
                (frames and frames[-1].index != snapshot.frame_index - 1):
            raise ValueError("that snapshot's frames are not one run of consecutive frames")
        contexts: dict[str, torch.Tensor | None] = {}
        frames = tuple(self._local(f, contexts) for f in frames)
        ctx = snapshot.prompt_ctx if snapshot.prompt_ctx is not None else self._context_of(snapshot.prompt, contexts)
        prime = frames[len(frames) - min(snapshot.prime, self.restore_frames):]
        cache = self._history()
        cache.reset()
        self.frame_index = prime[0].index if prime else snapshot.frame_index
        shape = (1, 1, *self.config.latent_shape)
        for f in prime:
            self._prompt_ctx = f.prompt_ctx
            self._cache_pass(f.latent.view(shape), self.frame_conditions(f.ctrl))
        self.prompt, self._prompt_ctx = snapshot.prompt, ctx
        self._kept = deque(frames, maxlen=self._history_frames)
        self._start_index = snapshot.start_index
        self.generator.set_state(snapshot.rng)
        scratch = torch.empty(shape, dtype=torch.float32)
        for _ in range(snapshot.draws):
            self._draw_noise(scratch)
        self._rng_state, self._rng_draws = snapshot.rng, snapshot.draws

    def _context_of(self, prompt: str | None, contexts: dict[str, torch.Tensor | None]) -> torch.Tensor | None:
        """The prompt's keys and values in this process (a portable snapshot carries text only)."""
        if self.config.prompt_conditioning is None or prompt is None:   # None: the default, set lazily
            return None
        if prompt not in contexts:
            emb, pad_mask = self.prompt_encoder([prompt])
            emb = emb.to(self.device, self.dtype).masked_fill(pad_mask.to(self.device)[..., None], 0)
            contexts[prompt] = self.model.prompt_kv(emb)
        return contexts[prompt]

    def _local(self, frame: KeptFrame, contexts: dict[str, torch.Tensor | None]) -> KeptFrame:
        """``frame`` with its latent in this engine's device and dtype and its prompt's K/V here."""
        latent = frame.latent.to(self.device, self.dtype)
        ctx = frame.prompt_ctx if frame.prompt_ctx is not None else self._context_of(frame.prompt, contexts)
        if latent is frame.latent and ctx is frame.prompt_ctx:
            return frame
        return dataclasses.replace(frame, latent=latent, prompt_ctx=ctx)

    def _require_autoencoder(self):
        if self.autoencoder is None:
            raise ValueError("this model has no autoencoder (config has no ae_uri): it works on latents only; "
                             "use append_latent() and gen_frame(return_img=False)")
        return self.autoencoder


def _sample_noise(engine: WorldEngine) -> torch.Tensor:
    upload = engine._upload("noise", (1, 1, *engine.config.latent_shape))
    engine._draw_noise(upload.fill())
    return upload.send().to(engine.dtype)


def _median_seconds(fn: Callable[[], Any], repeats: int = 9) -> float:
    """The median time of ``repeats`` calls: what a session's frame rate follows (on some CPUs the
    compiled code's best frame equals eager's while its median is twice as slow)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _pass(sessions: Sequence[WorldEngine], xs: Sequence[torch.Tensor], conditions: Sequence[FrameConditions],
          step: int | None, write: bool, step_fn: Any = None) -> list[torch.Tensor]:
    """One DiT forward (``step_fn``, default the engine's flat entry) of the next frame of every
    session, their rows stacked in one batch."""
    step_fn = sessions[0]._step if step_fn is None else step_fn
    args = [s.step_inputs(x, c, step, write) for s, x, c in zip(sessions, xs, conditions)]
    if len(args) == 1:
        return [step_fn(*args[0])]
    rows = [a[0].shape[0] for a in args]
    prompt = None if args[0][4] is None else torch.cat([a[4] for a in args], dim=2)
    v = step_fn(torch.cat([a[0] for a in args]), args[0][1], args[0][2],
                          torch.cat([a[3] for a in args], dim=1), prompt,
                          torch.cat([a[5].expand(-1, r, -1, -1) for a, r in zip(args, rows)], dim=1),
                          tuple(a[6] for a in args), tuple(a[7] for a in args), tuple(a[8] for a in args))
    return list(v.split(rows))


def _generate(sessions: Sequence[WorldEngine], ctrls: Sequence[CtrlInput | None],
              noises: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
    """The next latent ``[C, H, W]`` of every session, all stepped together: ``n_steps`` denoising
    passes and the cache pass, each one DiT forward for the whole batch."""
    conditions = [s.frame_conditions(c) for s, c in zip(sessions, ctrls)]
    xs = [_sample_noise(s) if n is None else n for s, n in zip(sessions, noises)]
    for step in range(sessions[0].n_steps):
        vs = _pass(sessions, xs, conditions, step, write=False)
        xs = [s._euler(x, v, step) for s, x, v in zip(sessions, xs, vs)]
    _pass(sessions, xs, conditions, None, write=True)
    for s, x, ctrl, noise in zip(sessions, xs, ctrls, noises):
        s._written()
        s._keep(x, ctrl, drew=noise is None)
    return [x[0, 0] for x in xs]


@torch.inference_mode()
def gen_frames(sessions: Sequence[WorldEngine], ctrls: Sequence[CtrlInput | None],
               return_img: bool = True) -> list[torch.Tensor]:
    """``gen_frame`` for several sessions of one engine at once: every pass is one DiT forward over
    all their rows (projections and MLPs batched, each session attending to its own cache), so a
    device serves several visitors for little more than the price of one where a pass costs its
    kernel launches. Each session makes the frames it would make alone, noise for noise."""
    sessions, ctrls = list(sessions), list(ctrls)
    if len(sessions) != len(ctrls) or not sessions:
        raise ValueError(f"need one control per session, got {len(sessions)} sessions and {len(ctrls)} controls")
    first = sessions[0]
    if len({id(s) for s in sessions}) != len(sessions):
        raise ValueError("a session can make only one frame per batch")
    for s in sessions:
        if not isinstance(s, WorldEngine) or s._shared is not first._shared:
            raise ValueError("batched sessions must be forks of one engine")
        if s._closed:
            raise RuntimeError("this session is closed")
        if s.config.scheduler_sigmas != first.config.scheduler_sigmas:
            raise ValueError("batched sessions must share one sampling schedule")
        if return_img:
            s._require_autoencoder()
    latents = _generate(sessions, ctrls, [None] * len(sessions))
    if not return_img:
        return [latent.clone() for latent in latents]
    return [first.autoencoder.decode(latent) for latent in latents]
