"""The Waypoint world model: a frame-causal diffusion transformer over latent frames.

One class serves training (many frames at once under a block-causal mask) and inference (one frame
at a time against a :class:`RingKVCache`). Module names follow the checkpoint's state-dict keys, so
``load_state_dict`` reads released Waypoint files as they are. The math is specified in
``waypoint-format.md`` §3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pathlib import Path

from ..config import WorldConfig
from .kv_cache import RingKVCache, layer_slots
from .weights import check_weight_shapes

RMS_EPS = torch.finfo(torch.float32).eps
NOISE_FOURIER_DIM = 512
POSITION_TABLES = ("rope_xy", "rope_t_freqs")  # non-persistent buffers that never follow the model dtype


def rms(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMS norm over the last axis, computed in float32 (float32 inputs skip the two
    no-op casts: on a CPU every op call costs microseconds, and a frame makes ~200 of these)."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), eps=RMS_EPS)
    return F.rms_norm(x.float(), (x.shape[-1],), eps=RMS_EPS).to(x.dtype)


class MLP(nn.Module):
    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, dim_hidden, bias=False)
        self.fc2 = nn.Linear(dim_hidden, dim_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class NoiseConditioner(nn.Module):
    """sigma -> Fourier features -> MLP; always evaluated in float32."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mlp = MLP(NOISE_FOURIER_DIM, 4 * d_model, d_model)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        freq = torch.logspace(0, -1, NOISE_FOURIER_DIM // 2, base=10_000.0, dtype=torch.float32,
                              device=sigma.device)
        phase = (sigma.float() * 1000)[..., None] * freq
        features = torch.cat((phase.sin(), phase.cos()), dim=-1) * 2**0.5
        fc1, fc2 = self.mlp.fc1.weight.float(), self.mlp.fc2.weight.float()
        return F.linear(F.silu(F.linear(features, fc1)), fc2)


class NullEmbedding(nn.Module):
    """The classifier-free-guidance "unconditioned" embedding (used only in training)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.null_emb = nn.Parameter(torch.zeros(1, 1, dim))


class CondHead(nn.Module):
    """Noise embedding -> the six AdaLN modulations (s0, b0, g0, s1, b1, g1) of one block."""

    def __init__(self, config: WorldConfig) -> None:
        super().__init__()
        d = config.d_model
        self.bias_in = nn.Parameter(torch.zeros(d)) if config.noise_conditioning == "wan" else None
        self.cond_proj = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(6))

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = F.silu(c + self.bias_in if self.bias_in is not None else c)
        return tuple(proj(z) for proj in self.cond_proj)


# --------------------------------------------------------------------------------------------------
# Rotary position embedding over (x, y, t)


def spatial_rope_angles(config: WorldConfig) -> torch.Tensor:
    """Angles ``[T, dh/4]`` of the x and y axes ("pixel" frequencies, each used twice)."""
    hp, wp, dh = config.height, config.width, config.head_dim
    freqs = torch.linspace(1.0, 0.8 * min(hp, wp) / 2, dh // 16) * math.pi
    ax = torch.linspace(-1 + 1 / wp, 1 - 1 / wp, wp)[:, None] * freqs
    ay = torch.linspace(-1 + 1 / hp, 1 - 1 / hp, hp)[:, None] * freqs
    ax, ay = ax.repeat_interleave(2, -1), ay.repeat_interleave(2, -1)
    token = torch.arange(hp * wp)
    return torch.cat((ax[token % wp], ay[token // wp]), dim=-1)


def temporal_rope_freqs(config: WorldConfig) -> torch.Tensor:
    """Frequencies ``[dh/4]`` of the time axis ("lang", theta 10 000, each used twice), float64."""
    dim = config.head_dim // 4
    omega = 1.0 / (10_000.0 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    return omega.double().repeat_interleave(2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x[2i], x[2i+1])``; the output is de-interleaved (evens, then odds)."""
    xf = x if x.dtype == torch.float32 else x.float()
    x0, x1 = xf[..., 0::2], xf[..., 1::2]
    out = torch.cat((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)
    return out if out.dtype == x.dtype else out.to(x.dtype)


# --------------------------------------------------------------------------------------------------
# Per-frame conditioning, computed once and reused by every denoising step


@dataclass
class NoiseContext:
    """AdaLN modulations for one noise level per frame: six per block plus the output norm's two."""

    blocks: list[tuple[torch.Tensor, ...]]  # per layer: 6 x [B, N, 1, D]
    out_scale: torch.Tensor  # [B, N, 1, D]
    out_shift: torch.Tensor


@dataclass
class ControlContext:
    """The control term ``Wc · rms(u)`` of every fusion layer (None elsewhere), ``[B, N, 1, D]``."""

    terms: list[torch.Tensor | None]


@dataclass
class PromptContext:
    """Cross-attention keys and values of the prompt for every CA layer, ``[B, heads, S, dh]``."""

    kv: list[tuple[torch.Tensor, torch.Tensor] | None]


# --------------------------------------------------------------------------------------------------
# Attention


def frame_visibility(timestamps: torch.Tensor, window: int, dilation: int) -> torch.Tensor:
    """Which frames each frame attends to in a cached rollout: ``[B, N, N]`` bool.

    A frame sees itself, and an earlier frame ``t'`` when ``t - t' < window`` and ``t'`` is a
    multiple of ``dilation`` -- exactly the frames a ring cache keeps (``waypoint-format.md`` §3.7).
    """
    tq, tk = timestamps[:, :, None], timestamps[:, None, :]
    n = timestamps.shape[1]
    past = (tk < tq) & (tq - tk < window) & (tk % dilation == 0)
    return past | torch.eye(n, dtype=torch.bool, device=timestamps.device)


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA with grouped KV heads: query head ``h`` uses KV head ``h // (Hq / Hkv)``.

    Queries of a group are stacked along the sequence axis, so K and V are never repeated.
    ``mask`` (True = attend) broadcasts as ``[B, 1, Mq or 1, Mk]``.
    """
    b, hq, m, dh = q.shape
    hkv = k.shape[1]
    group = hq // hkv
    if group > 1:
        q = q.reshape(b, hkv, group * m, dh)
        if mask is not None and mask.shape[-2] > 1:
            mask = mask[:, :, None].expand(-1, -1, group, -1, -1).reshape(mask.shape[0], 1, group * m, -1)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.reshape(b, hq, m, dh)


ATTENTION_BACKENDS = ("sdpa", "flex")
FLEX_BLOCK = 128


def cached_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                     backend: str = "sdpa") -> torch.Tensor:
    """Attention of one frame's queries ``[B, Hq, T, dh]`` over the cache ``[B, Hkv, capacity, dh]``.

    ``mask [capacity]`` marks the live slots. ``sdpa`` passes it as a boolean mask (every kernel that
    takes a mask, the reference for parity); ``flex`` (CUDA, compiled) turns it into a FlexAttention
    block mask, so the kernel is a flash-style one that skips the dead slots instead of masking them.
    Dead slots are whole frames, so with ``tokens_per_frame`` a multiple of the block size every
    block is either live or dead and no per-element mask is evaluated.
    """
    if backend == "flex":
        return _flex_cached_attention(q, keys, values, mask)
    if backend != "sdpa":
        raise ValueError(f"unknown attention backend {backend!r}: use one of {ATTENTION_BACKENDS}")
    return grouped_attention(q, keys, values, mask.view(1, 1, 1, -1))


def flex_block_size(tokens: int, capacity: int) -> int | None:
    """The KV block size FlexAttention uses for a cache, or None where no block size fits."""
    for size in (FLEX_BLOCK, 64, 32, 16):  # the fused kernels take blocks of 16 and up
        if tokens % size == 0 and capacity % size == 0:
            return size
    return None


def _flex_cached_attention(q, keys, values, mask):
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    b, hq, m, dh = q.shape
    capacity = keys.shape[2]
    size = flex_block_size(m, capacity)
    if size is None:
        return grouped_attention(q, keys, values, mask.view(1, 1, 1, -1))
    blocks = capacity // size
    live = mask.view(blocks, size)[:, 0]  # slots are whole frames: a block is all live or all dead
    order = torch.argsort((~live).to(torch.int32), stable=True).to(torch.int32)  # live blocks first
    q_blocks = (m + size - 1) // size
    count = live.sum().to(torch.int32).view(1, 1, 1).expand(1, 1, q_blocks).contiguous()
    indices = order.view(1, 1, 1, blocks).expand(1, 1, q_blocks, blocks).contiguous()
    empty = torch.zeros_like(count)
    # Live blocks are "full" blocks, so the fused kernel never evaluates ``mask_mod`` for them; the
    # mask_mod states the same mask for paths that ignore the block structure (eager, CPU).
    block_mask = BlockMask.from_kv_blocks(empty, indices, count, indices, BLOCK_SIZE=size,
                                          mask_mod=lambda b, h, q_idx, kv_idx: mask[kv_idx],
                                          seq_lengths=(m, capacity))
    return flex_attention(q, keys, values, block_mask=block_mask, enable_gqa=hq != keys.shape[1])


class SelfAttention(nn.Module):
    def __init__(self, config: WorldConfig, layer: int) -> None:
        super().__init__()
        d, hq, hkv, dh = config.d_model, config.n_heads, config.n_kv_heads, config.head_dim
        self.layer, self.hq, self.hkv, self.dh = layer, hq, hkv, dh
        self.window, self.dilation = config.layer_window(layer)
        self.q_proj = nn.Linear(d, hq * dh, bias=False)
        self.k_proj = nn.Linear(d, hkv * dh, bias=False)
        self.v_proj = nn.Linear(d, hkv * dh, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.gate_proj = nn.Linear(hq, hq, bias=False) if config.gated_attn else None
        self.v_lamb = nn.Parameter(torch.tensor(0.5)) if config.value_residual else None
        self.qkv_weight: torch.Tensor | None = None  # fused copy, set by WorldDiT.fuse_for_inference

    def project(self, a: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], v_first: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Queries, keys and values ``[B, heads, N*T, dh]`` after QK-norm and RoPE (and value residual)."""
        b, n, t, _ = a.shape
        m = n * t
        if self.qkv_weight is not None:
            q, k, v = F.linear(a, self.qkv_weight).split((self.hq * self.dh, self.hkv * self.dh,
                                                          self.hkv * self.dh), dim=-1)
        else:
            q, k, v = self.q_proj(a), self.k_proj(a), self.v_proj(a)
        q = q.reshape(b, m, self.hq, self.dh).transpose(1, 2)
        k = k.reshape(b, m, self.hkv, self.dh).transpose(1, 2)
        v = v.reshape(b, m, self.hkv, self.dh).transpose(1, 2)
        if self.v_lamb is not None:
            v_first = v if v_first is None else v_first
            v = torch.lerp(v, v_first, self.v_lamb.to(v.dtype))
        cos, sin = rope
        return apply_rope(rms(q), cos, sin), apply_rope(rms(k), cos, sin), v, v_first

    def finish(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gate (if any) and output projection of the attention result ``y [B, Hq, N*T, dh]``."""
        b, n, t, _ = a.shape
        if self.gate_proj is not None:
            gate = torch.sigmoid(self.gate_proj(a[..., :self.hq]))  # [B, N, T, Hq]
            y = y * gate.reshape(b, n * t, self.hq).transpose(1, 2)[..., None]
        y = y.transpose(1, 2).reshape(b, n, t, self.hq * self.dh)
        return self.out_proj(y)

    def forward(self, a: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], v_first: torch.Tensor | None,
                cache: RingKVCache | None, timestamps: torch.Tensor,
                visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        t = a.shape[2]
        q, k, v, v_first = self.project(a, rope, v_first)
        if cache is not None:
            k, v, valid = cache.upsert(self.layer, k, v)
            mask = valid.view(1, 1, 1, -1)
        else:
            frames = visible if visible is not None else frame_visibility(timestamps, self.window, self.dilation)
            mask = frames.repeat_interleave(t, 1).repeat_interleave(t, 2)[:, None]
        y = grouped_attention(q, k, v, mask)  # [B, Hq, M, dh]
        return self.finish(a, y), v_first

    def step(self, a: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], v_first: torch.Tensor | None,
             kv: tuple[torch.Tensor, ...], mask: tuple[torch.Tensor, ...], write_index: tuple[torch.Tensor, ...],
             attention: str = "sdpa") -> tuple[torch.Tensor, torch.Tensor | None]:
        """One cached frame of one or more sessions, caches as tensors. Per session, in batch order:
        ``kv [2, rows, Hkv, capacity, dh]`` (keys, values), ``mask [capacity]`` (True = attend) and
        ``write_index [T]`` (where this frame's K/V go; the tail always gets them too, since this
        frame attends to itself there). The projections run over all sessions' rows at once; each
        session's rows attend to its own cache."""
        q, k, v, v_first = self.project(a, rope, v_first)
        if len(kv) == 1:
            y = self._attend_cached(q, k, v, kv[0], mask[0], write_index[0], attention)
        else:
            ys, r = [], 0
            for kv_s, mask_s, index_s in zip(kv, mask, write_index):
                rows = kv_s.shape[1]
                ys.append(self._attend_cached(q[r:r + rows], k[r:r + rows], v[r:r + rows], kv_s, mask_s,
                                              index_s, attention))
                r += rows
            y = torch.cat(ys)
        return self.finish(a, y), v_first

    @staticmethod
    def _attend_cached(q, k, v, kv, mask, write_index, attention):
        keys, values = kv[0], kv[1]
        t = k.shape[2]
        keys[:, :, -t:].copy_(k)
        values[:, :, -t:].copy_(v)
        keys.index_copy_(2, write_index, k)
        values.index_copy_(2, write_index, v)
        return cached_attention(q, keys, values, mask, attention)


class PromptCrossAttention(nn.Module):
    """Cross-attention to the prompt; pads are zero rows and deliberately not masked."""

    def __init__(self, config: WorldConfig) -> None:
        super().__init__()
        d, p = config.d_model, config.prompt_embedding_dim
        self.dh = config.head_dim
        self.heads = p // self.dh
        self.q_proj = nn.Linear(d, p, bias=False)
        self.k_proj = nn.Linear(p, p, bias=False)
        self.v_proj = nn.Linear(p, p, bias=False)
        self.out_proj = nn.Linear(p, d, bias=False)

    def context(self, prompt_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = rms(prompt_emb)
        b, s, _ = ctx.shape
        k = rms(self.k_proj(ctx).reshape(b, s, self.heads, self.dh)).transpose(1, 2)
        v = self.v_proj(ctx).reshape(b, s, self.heads, self.dh).transpose(1, 2)
        return k, v

    def forward(self, h: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, t, _ = h.shape
        q = rms(self.q_proj(rms(h)).reshape(b, n * t, self.heads, self.dh)).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, *kv)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, t, -1))


class ControlFusion(nn.Module):
    """``fc2(SiLU(Wx · rms(h) + Wc · n(u)))``: fc1's left half acts on tokens, right on controls.

    ``n`` is the RMS norm for Waypoint checkpoints (``ctrl_fusion_norm: rms``), which keeps only
    the direction of the control embedding, or the identity (``none``), which keeps its magnitude.
    """

    def __init__(self, config: WorldConfig) -> None:
        super().__init__()
        self.d = config.d_model
        self.norm_controls = config.ctrl_fusion_norm == "rms"
        self.mlp = MLP(2 * self.d, self.d, self.d)

    def control_term(self, u: torch.Tensor) -> torch.Tensor:
        return F.linear(rms(u) if self.norm_controls else u, self.mlp.fc1.weight[:, self.d:])

    def forward(self, h: torch.Tensor, control_term: torch.Tensor) -> torch.Tensor:
        x = F.linear(rms(h), self.mlp.fc1.weight[:, :self.d])
        return self.mlp.fc2(F.silu(x + control_term))


class Block(nn.Module):
    def __init__(self, config: WorldConfig, layer: int) -> None:
        super().__init__()
        self.attn = SelfAttention(config, layer)
        self.mlp = MLP(config.d_model, config.d_model * config.mlp_ratio, config.d_model)
        self.cond_head = CondHead(config)
        self.prompt_cross_attn = PromptCrossAttention(config) if config.has_prompt_attn(layer) else None
        self.ctrl_mlpfusion = ControlFusion(config) if config.has_ctrl_fusion(layer) else None

    def forward(self, h: torch.Tensor, mods: tuple[torch.Tensor, ...], rope: tuple[torch.Tensor, torch.Tensor],
                v_first: torch.Tensor | None, control_term: torch.Tensor | None,
                prompt_kv: tuple[torch.Tensor, torch.Tensor] | None, cache: RingKVCache | None,
                timestamps: torch.Tensor, visible: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._body(h, mods, control_term, prompt_kv,
                          lambda a: self.attn(a, rope, v_first, cache, timestamps, visible))

    def step(self, h: torch.Tensor, mods: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
             v_first: torch.Tensor | None, control_term: torch.Tensor | None,
             prompt_kv: tuple[torch.Tensor, torch.Tensor] | None, kv: torch.Tensor, mask: torch.Tensor,
             write_index: torch.Tensor, attention: str = "sdpa") -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward`` for one cached frame, cache as tensors (see ``SelfAttention.step``)."""
        return self._body(h, mods, control_term, prompt_kv,
                          lambda a: self.attn.step(a, rope, v_first, kv, mask, write_index, attention))

    def _body(self, h, mods, control_term, prompt_kv, attend):
        s0, b0, g0, s1, b1, g1 = mods
        a = rms(h) * (1 + s0) + b0
        y, v_first = attend(a)
        h = h + g0 * y
        if self.prompt_cross_attn is not None:
            h = h + self.prompt_cross_attn(h, prompt_kv)
        if self.ctrl_mlpfusion is not None:
            h = h + self.ctrl_mlpfusion(h, control_term)
        h = h + g1 * self.mlp(rms(h) * (1 + s1) + b1)
        return h, v_first


class Transformer(nn.Module):
    def __init__(self, config: WorldConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))


class AdaLNOut(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, 2 * d_model, bias=False)


# --------------------------------------------------------------------------------------------------


class WorldDiT(nn.Module):
    """Denoises latent frames given past frames (cache or mask), controls, prompt and noise level.

    ``forward`` returns the rectified-flow velocity ``noise - x0`` for each input frame.
    """

    def __init__(self, config: WorldConfig) -> None:
        super().__init__()
        self.config = config
        d, c, (ph, pw) = config.d_model, config.channels, config.patch
        self.denoise_step_emb = NoiseConditioner(d)
        self.ctrl_emb = ControlEmbedding(config.ctrl_dim, d * config.mlp_ratio, d)
        if config.ctrl_conditioning is not None:
            self.ctrl_cfg = NullEmbedding(d)
        if config.prompt_conditioning is not None:
            self.prompt_cfg = NullEmbedding(config.prompt_embedding_dim)
        self.transformer = Transformer(config)
        self.patchify = nn.Conv2d(c, d, kernel_size=(ph, pw), stride=(ph, pw), bias=False)
        self.unpatchify = nn.Linear(d, c * ph * pw, bias=True)
        self.out_norm = AdaLNOut(d)
        self.register_buffer("rope_xy", spatial_rope_angles(config), persistent=False)
        self.register_buffer("rope_t_freqs", temporal_rope_freqs(config), persistent=False)
        self.tie_weights()

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.blocks

    def tie_weights(self) -> None:
        """Share block 0's cond_proj with every block ("wan" and "dit_air" conditioning)."""
        if self.config.noise_conditioning in ("wan", "dit_air"):
            shared = self.blocks[0].cond_head.cond_proj
            for block in self.blocks[1:]:
                for proj, ref in zip(block.cond_head.cond_proj, shared):
                    proj.weight = ref.weight

    def _apply(self, fn, recurse=True):
        """``to``/``half``/``cuda``...: the position tables move with the model but keep their dtype.

        RoPE angles reach ~19 rad, where bf16 loses ~0.04 rad; the reference keeps them in float32
        too (and the time frequencies stay float64 for the exact modulo in ``rope``).
        """
        tables = {name: self._buffers.pop(name) for name in POSITION_TABLES if name in self._buffers}
        try:
            super()._apply(fn, recurse)
        finally:
            device = self.unpatchify.weight.device
            for name, table in tables.items():
                self._buffers[name] = (torch.empty_like(table, device=device) if table.is_meta
                                       else table.to(device))
        return self

    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffers (after building on the meta device)."""
        self.rope_xy = spatial_rope_angles(self.config).to(self.rope_xy.device)
        self.rope_t_freqs = temporal_rope_freqs(self.config).to(self.rope_t_freqs.device)

    @torch.no_grad()
    def fuse_for_inference(self) -> None:
        """Concatenate Q, K, V weights into one GEMM per layer (same math, fewer launches).

        The fused matrix becomes the only storage: ``q_proj``/``k_proj``/``v_proj`` keep their names
        and values as views into it, so fusing costs no extra memory.
        """
        for block in self.blocks:
            attn = block.attn
            if attn.qkv_weight is not None:
                continue
            fused = torch.cat((attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight))
            attn.qkv_weight = nn.Parameter(fused, requires_grad=False)
            start = 0
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                rows = proj.weight.shape[0]
                proj.weight = nn.Parameter(fused[start:start + rows], requires_grad=False)
                start += rows

    def load_checkpoint(self, path: str | Path) -> None:
        """Read ``model.safetensors`` strictly, one tensor at a time, straight into this model's
        (already placed and typed) parameters: no second copy of the weights, ever."""
        from safetensors import safe_open

        expected = self.state_dict(keep_vars=True)
        with safe_open(str(path), framework="pt", device="cpu") as f:
            check_weight_shapes({k: list(v.shape) for k, v in expected.items()},
                                {k: f.get_slice(k).get_shape() for k in f.keys()}, path)
            done: set[int] = set()
            with torch.no_grad():
                for key, target in expected.items():
                    if id(target) in done:  # tied weights (cond_proj): every copy in the file is equal
                        continue
                    target.copy_(f.get_tensor(key))
                    done.add(id(target))

    # Flat inference entry ---------------------------------------------------------------------
    def layer_slots(self) -> list[tuple[int, int]]:
        """``(group, index)`` of every layer's K/V in the ring cache's stacked buffers."""
        return layer_slots(self.config)

    def noise_mods(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``noise_context`` stacked: block modulations ``[L, 6, B, N, 1, D]`` and the output
        norm's ``[2, B, N, 1, D]`` (scale, shift)."""
        ctx = self.noise_context(sigma)
        return (torch.stack([torch.stack(mods) for mods in ctx.blocks]),
                torch.stack((ctx.out_scale, ctx.out_shift)))

    def control_terms(self, ctrl: torch.Tensor) -> torch.Tensor:
        """``control_context`` stacked over the fusion layers: ``[F, B, N, 1, D]``."""
        return torch.stack([t for t in self.control_context(ctrl).terms if t is not None])

    def null_control_terms(self) -> torch.Tensor:
        """``control_terms`` of the learned null control (classifier-free guidance): ``[F, 1, 1, 1, D]``."""
        u = self.ctrl_cfg.null_emb[:, :, None].to(self.unpatchify.weight.dtype)
        return torch.stack([block.ctrl_mlpfusion.control_term(u) for block in self.blocks
                            if block.ctrl_mlpfusion is not None])

    def prompt_kv(self, prompt_emb: torch.Tensor) -> torch.Tensor | None:
        """``prompt_context`` stacked over the cross-attention layers: ``[CA, 2, B, heads, S, dh]``."""
        if self.config.prompt_conditioning is None:
            return None
        return torch.stack([torch.stack(kv) for kv in self.prompt_context(prompt_emb).kv if kv is not None])

    def rope_table(self, timestamp: torch.Tensor) -> torch.Tensor:
        """cos and sin ``[2, 1, T, dh/2]`` (float32) of one frame at ``timestamp [1, 1]``; a batch
        of sessions stacks theirs along dim 1, one per row."""
        cos, sin = self.rope(timestamp)
        return torch.stack((cos[:, 0], sin[:, 0]))

    def step(self, x: torch.Tensor, mods: torch.Tensor, out_mod: torch.Tensor, ctrl_terms: torch.Tensor,
             prompt_kv: torch.Tensor | None, rope: torch.Tensor, kv: tuple[torch.Tensor, ...],
             masks: tuple[torch.Tensor, ...], write_index: tuple[torch.Tensor, ...],
             attention: str = "sdpa") -> torch.Tensor:
        """The inference forward of one frame, every input a tensor (``torch.export``-able).

        ``x [B, 1, C, H, W]``; ``mods``/``out_mod`` from ``noise_mods``; ``ctrl_terms`` from
        ``control_terms``; ``prompt_kv`` from ``prompt_kv`` (None without prompt conditioning);
        ``rope`` from ``rope_table``; per cache group (``RingKVCache.flat``): the stacked K/V
        buffers ``[layers, 2, B, Hkv, capacity, dh]`` (written in place: this frame's K/V go to the
        tail and to ``write_index``), the live-slot ``mask [capacity]`` and ``write_index [T]``.
        Same math as ``forward(x, sigma, ..., cache=cache)``; returns the velocity ``[B, 1, C, H, W]``.
        Several sessions in one batch: their rows stacked in ``x``, ``ctrl_terms``, ``prompt_kv``
        and ``rope`` (one row each), and ``kv``/``masks``/``write_index`` a tuple of the above per
        session (``world_engine.engine.gen_frames``).
        """
        return flat_step(self, x, mods, out_mod, ctrl_terms, prompt_kv, rope, kv, masks, write_index, attention)

    # Conditioning -----------------------------------------------------------------------------
    def noise_context(self, sigma: torch.Tensor) -> NoiseContext:
        """Modulations for noise levels ``sigma [B, N]``."""
        dtype = self.unpatchify.weight.dtype
        c = self.denoise_step_emb(sigma).to(dtype)[:, :, None]  # [B, N, 1, D]
        mods = [block.cond_head(c) for block in self.blocks]
        scale, shift = self.out_norm.fc(F.silu(c)).chunk(2, dim=-1)
        return NoiseContext(mods, scale, shift)

    def control_context(self, ctrl: torch.Tensor, dropped: torch.Tensor | None = None) -> ControlContext:
        """Control terms for control vectors ``ctrl [B, N, n_buttons + 3]`` (raw mouse units).

        ``dropped [B]`` (training only) puts the learned null embedding in place of a clip's controls.
        """
        ctrl = ctrl.to(self.unpatchify.weight.dtype)
        if self.config.mouse_scale != 1.0:
            ctrl = torch.cat((ctrl[..., :2] * self.config.mouse_scale, ctrl[..., 2:]), dim=-1)
        u = self.ctrl_emb(ctrl)[:, :, None]
        if dropped is not None:
            u = torch.where(dropped[:, None, None, None], self.ctrl_cfg.null_emb[:, :, None].to(u.dtype), u)
        return ControlContext([block.ctrl_mlpfusion.control_term(u) if block.ctrl_mlpfusion is not None else None
                               for block in self.blocks])

    def prompt_context(self, prompt_emb: torch.Tensor) -> PromptContext:
        """Per-layer keys and values of a prompt embedding ``[B, S, P]`` (pad rows are zero)."""
        prompt_emb = prompt_emb.to(self.unpatchify.weight.dtype)
        return PromptContext([block.prompt_cross_attn.context(prompt_emb) if block.prompt_cross_attn is not None
                              else None for block in self.blocks])

    def rope(self, timestamps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[B, 1, N*T, dh/2]`` for frames at integer ``timestamps [B, N]``.

        Time angles are reduced modulo 2*pi in float64, so any frame index is exact.
        """
        b, n = timestamps.shape
        t_angles = torch.remainder(timestamps.double()[..., None] * self.rope_t_freqs, 2 * math.pi).float()
        tokens = self.rope_xy.shape[0]
        angles = torch.cat((self.rope_xy.expand(b, n, -1, -1),
                            t_angles[:, :, None].expand(-1, -1, tokens, -1)), dim=-1)
        angles = angles.reshape(b, 1, n * tokens, -1)
        return angles.cos(), angles.sin()

    # Forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sigma: torch.Tensor | NoiseContext, timestamps: torch.Tensor,
                ctrl: torch.Tensor | ControlContext, prompt: torch.Tensor | PromptContext | None = None,
                cache: RingKVCache | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity for latents ``x [B, N, C, H, W]`` at noise ``sigma [B, N]``.

        With ``cache`` (one frame, ``N == 1``) the frame attends to the cached history; the caller
        brackets the call with ``cache.begin(t, write)`` / ``cache.end()``. Without it the ``N``
        frames attend to each other as a cached rollout would (``frame_visibility``), or as
        ``visible [B, N, N]`` says.
        """
        cfg = self.config
        b, n, c, height, width = x.shape
        if (c, height, width) != cfg.latent_shape:
            raise ValueError(f"expected latent frames of shape {list(cfg.latent_shape)}, got {[c, height, width]}")
        if cache is not None and n != 1:
            raise ValueError("a cached forward takes exactly one frame")
        noise = sigma if isinstance(sigma, NoiseContext) else self.noise_context(sigma)
        control = ctrl if isinstance(ctrl, ControlContext) else self.control_context(ctrl)
        if cfg.prompt_conditioning is not None:
            if prompt is None:
                raise ValueError("this model is prompt-conditioned: pass a prompt embedding")
            prompt = prompt if isinstance(prompt, PromptContext) else self.prompt_context(prompt)

        h = self.patchify(x.reshape(b * n, c, height, width).to(self.patchify.weight.dtype))
        h = h.flatten(2).transpose(1, 2).reshape(b, n, cfg.tokens_per_frame, cfg.d_model)
        rope = self.rope(timestamps)
        v_first = None
        for i, block in enumerate(self.blocks):
            h, v_first = block(h, noise.blocks[i], rope, v_first, control.terms[i],
                               prompt.kv[i] if prompt is not None else None, cache, timestamps, visible)

        h = F.silu(rms(h) * (1 + noise.out_scale) + noise.out_shift)
        out = self.unpatchify(h)  # [B, N, T, C*ph*pw]
        ph, pw = cfg.patch
        out = out.reshape(b, n, cfg.height, cfg.width, c, ph, pw).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, n, c, height, width)


class ControlEmbedding(nn.Module):
    """``ctrl_emb``: control vector -> embedding; holds its MLP under ``.mlp`` as the checkpoint names it."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int) -> None:
        super().__init__()
        self.mlp = MLP(dim_in, dim_hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def flat_step(net, x, mods, out_mod, ctrl_terms, prompt_kv, rope, kv, masks, write_index, attention="sdpa"):
    """The body of ``WorldDiT.step`` for anything with the DiT's ``config``, ``blocks``,
    ``patchify`` and ``unpatchify`` (the DiT itself, or a ``DiTStep``).

    ``kv``/``masks``/``write_index`` are one session's (a tensor per cache group) or several
    sessions' (a tuple of those per session, their rows stacked in ``x`` in the same order)."""
    if isinstance(kv[0], torch.Tensor):
        kv, masks, write_index = (kv,), (masks,), (write_index,)
    cfg = net.config
    b, n, c, height, width = x.shape
    h = net.patchify(x.reshape(b * n, c, height, width).to(net.patchify.weight.dtype))
    h = h.flatten(2).transpose(1, 2).reshape(b, n, cfg.tokens_per_frame, cfg.d_model)
    cos_sin = (rope[0][:, None], rope[1][:, None])
    v_first = None
    fusion = cross = 0
    for i, (block, (group, index)) in enumerate(zip(net.blocks, layer_slots(net.config))):
        control_term = None
        if block.ctrl_mlpfusion is not None:
            control_term, fusion = ctrl_terms[fusion], fusion + 1
        prompt = None
        if block.prompt_cross_attn is not None:
            prompt, cross = (prompt_kv[cross, 0], prompt_kv[cross, 1]), cross + 1
        h, v_first = block.step(h, mods[i], cos_sin, v_first, control_term, prompt,
                                tuple(session[group][index] for session in kv),
                                tuple(session[group] for session in masks),
                                tuple(session[group] for session in write_index), attention)
    h = F.silu(rms(h) * (1 + out_mod[0]) + out_mod[1])
    out = net.unpatchify(h)
    ph, pw = cfg.patch
    out = out.reshape(b, n, cfg.height, cfg.width, c, ph, pw).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(b, n, c, height, width)


class DiTStep(nn.Module):
    """``WorldDiT.step`` as a module's ``forward``: what ``torch.compile``, ``torch.export`` and
    AOTInductor take. Its children are the DiT's own modules that a pass uses (``blocks``,
    ``patchify``, ``unpatchify``), shared, not copied; everything else a pass needs arrives as an
    input. It holds no non-persistent buffer, so its ``state_dict`` names every constant an
    exported/AOT-compiled program of it needs (the RoPE tables stay with the DiT)."""

    def __init__(self, dit: WorldDiT, attention: str = "sdpa") -> None:
        super().__init__()
        if attention not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {attention!r}: use one of {ATTENTION_BACKENDS}")
        self.config = dit.config
        self.blocks = dit.blocks
        self.patchify = dit.patchify
        self.unpatchify = dit.unpatchify
        self.attention = attention

    def forward(self, x, mods, out_mod, ctrl_terms, prompt_kv, rope, kv, masks, write_index):
        return flat_step(self, x, mods, out_mod, ctrl_terms, prompt_kv, rope, kv, masks, write_index,
                         self.attention)
