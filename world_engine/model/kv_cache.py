"""Ring-buffer KV cache over past frames, with local and dilated ("pinned") global windows.

Each layer keeps ``window // dilation`` frame slots plus a one-frame tail that always holds the
current frame. Layers that share ``(window, dilation)`` share one validity mask, computed once per
forward, and one stacked buffer. Buffers are allocated once; a forward only copies into them.
"""

from __future__ import annotations

import torch

from ..config import WorldConfig


class WindowSlots:
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


def layer_slots(config: WorldConfig) -> list[tuple[int, int]]:
    """``(group, index)`` of each layer: groups are the distinct ``(window, dilation)`` pairs in order
    of first use, ``index`` the layer's row in its group's stacked buffer."""
    groups: dict[tuple[int, int], int] = {}
    counts: list[int] = []
    slots = []
    for layer in range(config.n_layers):
        key = config.layer_window(layer)
        if key not in groups:
            groups[key] = len(groups)
            counts.append(0)
        g = groups[key]
        slots.append((g, counts[g]))
        counts[g] += 1
    return slots


class RingKVCache:
    """Static K/V buffers per layer, stored after QK-norm and RoPE.

    The layers of a group share one stacked buffer ``[layers, 2, B, Hkv, capacity, dh]`` (keys at
    ``[:, 0]``, values at ``[:, 1]``); ``keys[layer]``/``values[layer]`` are views into it. ``flat()``
    hands the buffers, masks and write indices to ``WorldDiT.step`` as plain tensors.
    """

    def __init__(self, config: WorldConfig, batch_size: int = 1, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        device = torch.device(device)
        tokens = config.tokens_per_frame
        slots = layer_slots(config)
        self.groups: dict[tuple[int, int], WindowSlots] = {}
        for layer in range(config.n_layers):
            window, dilation = config.layer_window(layer)
            if (window, dilation) not in self.groups:
                self.groups[(window, dilation)] = WindowSlots(window, dilation, tokens, device)
        ordered = list(self.groups.values())
        self.buffers: list[torch.Tensor] = []
        for g, group in enumerate(ordered):
            layers = sum(1 for gg, _ in slots if gg == g)
            shape = (layers, 2, batch_size, config.n_kv_heads, group.capacity, config.head_dim)
            self.buffers.append(torch.zeros(shape, device=device, dtype=dtype))
        self.layer_group: list[WindowSlots] = [ordered[g] for g, _ in slots]
        self.keys: list[torch.Tensor] = [self.buffers[g][i, 0] for g, i in slots]
        self.values: list[torch.Tensor] = [self.buffers[g][i, 1] for g, i in slots]
        self.tokens = tokens

    def reset(self) -> None:
        for group in self.groups.values():
            group.reset()
        for buf in self.buffers:
            buf.zero_()

    def begin(self, t: int, write: bool) -> None:
        """Start a forward for frame timestamp ``t``; ``write`` (the cache pass) keeps its K/V."""
        for group in self.groups.values():
            group.begin(t, write)

    def end(self) -> None:
        """Finish a writing forward: its ring slots now hold valid history."""
        for group in self.groups.values():
            group.commit()

    def flat(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """``(buffers, masks, write_indices)``, one entry per group, as ``WorldDiT.step`` takes them."""
        groups = list(self.groups.values())
        return (tuple(self.buffers), tuple(g.mask for g in groups), tuple(g.write_index for g in groups))

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
