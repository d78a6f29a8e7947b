"""How large does a loss path's biggest intermediate get?  Used by the loss benchmark and by the test
that the chunked path never materialises K×U: a dispatch mode sees every tensor any aten op returns,
forward and backward, on CPU as on GPU."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor returned by any aten op while active (elements and bytes)."""

    def __init__(self):
        super().__init__()
        self.largest_numel = 0
        self.largest_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(t, torch.Tensor):
                self.largest_numel = max(self.largest_numel, t.numel())
                self.largest_bytes = max(self.largest_bytes, t.numel() * t.element_size())
        return result
