"""Frames on their way from the device to the host.

On CUDA a frame's kernels run asynchronously; what makes a player wait is the copy to host memory
(a synchronisation) and the JPEG encode that follows it, some 7 ms for a 640x360 frame. A
``PendingFrame`` queues that copy into pinned memory right behind the frame's kernels, without
waiting for it, so the caller can queue the next frame and encode this one meanwhile
(``player.stream`` does). The copy stays on the frame's own stream: the next frame's kernels queue
behind it, so even a buffer that the next frame rewrites (a CUDA-graph output) is read first. On the
CPU a frame is on the host when it is made.
"""

from __future__ import annotations

import numpy as np
import torch


class PendingFrame:
    """An image (uint8 ``[H, W, 3]``) on its way to the host; ``result()`` waits for it."""

    def __init__(self, image: torch.Tensor | np.ndarray) -> None:
        self._done: torch.cuda.Event | None = None
        self.asynchronous = isinstance(image, torch.Tensor) and image.device.type == "cuda"
        if not self.asynchronous:
            self._host: np.ndarray = image if isinstance(image, np.ndarray) else image.cpu().numpy()
            return
        host = torch.empty(image.shape, dtype=image.dtype, pin_memory=True)   # torch caches pinned blocks
        host.copy_(image, non_blocking=True)
        self._done = torch.cuda.Event()
        self._done.record()
        self._host = host.numpy()            # the array keeps the pinned tensor alive

    def result(self) -> np.ndarray:
        """The frame on the host (uint8 ``[H, W, 3]``)."""
        if self._done is not None:
            self._done.synchronize()
            self._done = None
        return self._host
