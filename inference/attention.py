"""The rest of a prompt attending to a kept KV cache (decoder.py, a turn after the first):
each new position sees every kept one and the new ones up to itself.

torch's `scaled_dot_product_attention` runs this in float32 on the float32 cache at about
125 GFLOP/s on a 2-core AVX-512 host: 2.6 ms a layer for 100 new tokens after 1,326 kept,
78 ms of SmolLM2's 30 layers, while the linears run in bf16 at twice float32's rate, so a
turn-10 first token took 1.6x turn 1's. Where the CPU has AVX512-BF16, csrc/kept_attention.c
runs it with vdpbf16ps on an exact bf16 copy of the cache (its values are bf16 already).
"""

from __future__ import annotations

import torch

from inference.cpu_kernels import kernel
from inference.sharing import kernel_threads


def attend_kept(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, position: int, scaling: float) -> torch.Tensor | None:
    """q [n, heads, d] bf16 at positions position.. against keys and values [kv_heads,
    capacity, d] (float32, filled up to position + n): [n, heads * d] bf16, or None where
    the C kernel does not apply (then torch runs it)."""
    lib = kernel()
    n, heads, d = q.shape
    kv_heads, capacity = keys.shape[:2]
    if (lib is None or not lib.kept_attention_available() or q.device.type != "cpu" or q.dtype != torch.bfloat16
            or keys.dtype != torch.float32 or values.dtype != torch.float32 or values.shape != keys.shape
            or capacity < position + n or d % 32 or d > 128 or heads % kv_heads or not keys.is_contiguous()
            or not values.is_contiguous()):
        return None
    q, out = q.contiguous(), torch.empty(n, heads * d, dtype=torch.bfloat16)
    lib.kept_attention(q.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), n, heads, kv_heads, d, capacity, position,
                       scaling, kernel_threads())
    return out
