"""Which SDPA kernel is fastest for a preset's attention shape (forward + backward, bf16, H100)?

    python scripts/sdpa_backends.py [batch heads seq head_dim]
"""

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench_attention import time_ms as time_it  # scripts/ is on sys.path when run as a script

B, H, T, Dh = (int(x) for x in sys.argv[1:5]) if len(sys.argv) > 4 else (8, 12, 2048, 64)
q, k, v = (torch.randn(B, H, T, Dh, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
mask = torch.ones(T, T, device="cuda", dtype=torch.bool).tril()
flops = 4 * B * H * T * T * Dh / 2 * 3.5  # causal: half the scores; fwd + bwd = 3.5x fwd (flash-attn convention)


for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                      ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("default", None)]:
    for causal in (True, False):
        def step():
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal, attn_mask=None if causal else mask)
            o.sum().backward()
        try:
            if backend is None:
                ms = time_it(step)
            else:
                with sdpa_kernel([backend]):
                    ms = time_it(step)
            print(f"{name:10s} {'is_causal' if causal else 'bool mask'}: {ms:.2f} ms fwd+bwd, "
                  f"{flops / ms / 1e9:.0f} TFLOP/s (causal FLOPs)")
        except RuntimeError as err:
            print(f"{name:10s} {'is_causal' if causal else 'bool mask'}: unavailable ({str(err).splitlines()[0][:80]})")
