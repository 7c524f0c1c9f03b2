"""Ring-buffer KV cache over past frames, with local and dilated ("pinned") global windows.

Each layer keeps ``window // dilation`` frame slots plus a one-frame tail that always holds the
current frame. Layers that share ``(window, dilation)`` share one validity mask, computed once per
forward. Buffers are allocated once; a forward only copies into them.
"""

from __future__ import annotations

import torch

from ..config import WorldConfig


class _Group:
    """Slot bookkeeping shared by all layers with the same window and dilation.

    The forward itself only reads device tensors (``mask``, ``write_index``), so a compiled or
    graph-captured forward never depends on the frame number.
    """

    def __init__(self, window: int, dilation: int, tokens: int, device: torch.device) -> None:
        self.dilation = dilation
        self.num_slots = window // dilation
        self.tokens = tokens
        self.capacity = (self.num_slots + 1) * tokens
        self.written = torch.zeros(self.capacity, dtype=torch.bool, device=device)
        self.written[-tokens:] = True  # the tail always holds the current frame
        self.mask = torch.empty(self.capacity, dtype=torch.bool, device=device)
        # Token indices of every slot; the last row is the tail.
        self.slot_tokens = torch.arange(self.capacity, device=device).view(self.num_slots + 1, tokens)
        self.write_index = self.slot_tokens[-1].clone()
        self.slot: int | None = None  # ring slot that this forward writes, if any

    def reset(self) -> None:
        self.written.zero_()
        self.written[-self.tokens:] = True

    def begin(self, t: int, write: bool) -> None:
        """Take the attention mask for frame ``t``; the slot about to be overwritten is stale."""
        self.mask.copy_(self.written)
        self.slot = None
        if t % self.dilation == 0:
            slot = (t // self.dilation) % self.num_slots
            self.mask[slot * self.tokens:(slot + 1) * self.tokens] = False
            if write:
                self.slot = slot
        # A pass that keeps nothing writes the tail twice instead of a ring slot.
        self.write_index.copy_(self.slot_tokens[self.slot if self.slot is not None else -1])

    def commit(self) -> None:
        if self.slot is not None:
            self.written[self.slot * self.tokens:(self.slot + 1) * self.tokens] = True


class RingKVCache:
    """Static K/V buffers ``[B, Hkv, capacity, dh]`` per layer, stored after QK-norm and RoPE."""

    def __init__(self, config: WorldConfig, batch_size: int = 1, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        device = torch.device(device)
        tokens = config.tokens_per_frame
        self.groups: dict[tuple[int, int], _Group] = {}
        self.layer_group: list[_Group] = []
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for layer in range(config.n_layers):
            window, dilation = config.layer_window(layer)
            group = self.groups.get((window, dilation))
            if group is None:
                group = self.groups[(window, dilation)] = _Group(window, dilation, tokens, device)
            self.layer_group.append(group)
            shape = (batch_size, config.n_kv_heads, group.capacity, config.head_dim)
            self.keys.append(torch.zeros(shape, device=device, dtype=dtype))
            self.values.append(torch.zeros(shape, device=device, dtype=dtype))
        self.tokens = tokens

    def reset(self) -> None:
        for group in self.groups.values():
            group.reset()
        for buf in (*self.keys, *self.values):
            buf.zero_()

    def begin(self, t: int, write: bool) -> None:
        """Start a forward for frame timestamp ``t``; ``write`` (the cache pass) keeps its K/V."""
        for group in self.groups.values():
            group.begin(t, write)

    def end(self) -> None:
        """Finish a writing forward: its ring slots now hold valid history."""
        for group in self.groups.values():
            group.commit()

    def upsert(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store this frame's ``k, v`` ``[B, Hkv, T, dh]``; return all K, V and the validity mask."""
        group = self.layer_group[layer]
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, -self.tokens:].copy_(k)
        values[:, :, -self.tokens:].copy_(v)
        keys.index_copy_(2, group.write_index, k)
        values.index_copy_(2, group.write_index, v)
        return keys, values, group.mask
