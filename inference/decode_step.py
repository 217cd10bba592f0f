"""The C decode step (csrc/decode_step.c) as the lean loop calls it: one call runs a token
through every layer, where the torch loop dispatched ~25 small ops per layer.

It runs a bf16 model on CPU whose fused linears are bf16, int8 or (not native) FP8, with
the family's norms (Llama's or Gemma's, before and after each block), activation,
soft-cap and sliding windows as the decoder reads them from its description; `plan` says
None otherwise and the loop keeps torch, as it does where one layer of the step measured
slower than the loop's (decoder.py).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import nn

from inference.cpu_kernels import kernel
from inference.quantize import FP8Linear, Int8Linear
from inference.sharing import kernel_threads

_ptr = ctypes.c_void_p


class Linear(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("weight", _ptr), ("scale", _ptr), ("bias", _ptr), ("inputs", ctypes.c_int),
                ("outputs", ctypes.c_int)]


class Layer(ctypes.Structure):
    _fields_ = [("norms", _ptr * 4), ("qkv", Linear), ("o", Linear), ("gate_up", Linear), ("down", Linear), ("keys", _ptr),
                ("values", _ptr), ("window", ctypes.c_int)]


class Dims(ctypes.Structure):
    _fields_ = [("hidden", ctypes.c_int), ("heads", ctypes.c_int), ("kv_heads", ctypes.c_int), ("head_dim", ctypes.c_int),
                ("inter", ctypes.c_int), ("capacity", ctypes.c_int), ("eps", ctypes.c_float), ("scaling", ctypes.c_float),
                ("norm_offset", ctypes.c_float), ("activation", ctypes.c_int), ("softcap", ctypes.c_float)]


@dataclass(frozen=True)
class Shape:
    """What every layer of a model shares, as the decoder read it from the family."""
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    scaling: float
    norm_offset: float  # 1.0: norms scale by (1 + w)
    activation: int  # index in decoder.ACTIVATIONS: 0 silu, 1 gelu (tanh)
    softcap: float  # attention scores soft-capped at this; 0: not capped


def _linear(module: nn.Module, keep: list[torch.Tensor]) -> Linear | None:
    """The C view of a fused linear; its tensors go into `keep` (C holds raw pointers)."""
    if type(module) is nn.Linear and module.weight.dtype == torch.bfloat16:
        kind, scale = 0, None
    elif type(module) is Int8Linear and module.scale.dtype == torch.bfloat16:
        kind, scale = 1, module.scale.contiguous()
    elif type(module) is FP8Linear and not module.native:
        kind, scale = 2, module.scale.float().contiguous()
    else:
        return None
    bias = None if module.bias is None else module.bias.detach().contiguous()
    if bias is not None and bias.dtype != torch.bfloat16:
        return None
    weight = module.weight.detach().contiguous()
    keep.extend(t for t in (weight, scale, bias) if t is not None)
    out_features, in_features = weight.shape
    return Linear(kind, weight.data_ptr(), None if scale is None else scale.data_ptr(),
                  None if bias is None else bias.data_ptr(), in_features, out_features)


class Bound:
    """The layers with one reply's cache: replies of one model run at once, each its own."""

    def __init__(self, layers: list[Layer], dims: Dims, cache: list[tuple[torch.Tensor, torch.Tensor]], keep: list[torch.Tensor]):
        self.layers = (Layer * len(layers))(*layers)
        for layer, (keys, values) in zip(self.layers, cache, strict=True):
            layer.keys, layer.values = keys.data_ptr(), values.data_ptr()
        self.dims = Dims.from_buffer_copy(dims)
        self.dims.capacity = cache[0][0].shape[1]
        # The cache is not held here: it holds this (Cache.bound), and a cycle would keep
        # a reply's cache until the garbage collector ran. The weights are.
        self._keep = keep


def step_batch(bounds: list[Bound], x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: list[int]) -> None:
    """One token of each of several replies of one model (each bound to its own cache), in
    one pass over the weights: x [rows, hidden] bf16, updated in place; cos/sin [rows,
    head_dim], each reply's rotary row; `positions`, each reply's."""
    rows = len(bounds)
    seqs = (ctypes.POINTER(Layer) * rows)(*(ctypes.cast(b.layers, ctypes.POINTER(Layer)) for b in bounds))
    capacities = (ctypes.c_int * rows)(*(b.dims.capacity for b in bounds))
    at = (ctypes.c_int * rows)(*positions)
    assert x.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()  # C reads and writes them as flat rows
    kernel().decode_batch(seqs, capacities, rows, len(bounds[0].layers), ctypes.byref(bounds[0].dims), x.data_ptr(), cos.data_ptr(),
                          sin.data_ptr(), at, kernel_threads())


class Plan:
    """A model's layers for decode_step, built once per decoder."""

    def __init__(self, layers: list[Layer], dims: Dims, keep: list[torch.Tensor]):
        self.layers, self.dims, self._keep = layers, dims, keep

    def bind(self, cache: list[tuple[torch.Tensor, torch.Tensor]]) -> Bound:
        return Bound(self.layers, self.dims, cache, self._keep)

    def first_layer(self) -> Plan:
        return Plan(self.layers[:1], self.dims, self._keep)

    def shapes(self) -> tuple:
        """What the step's speed depends on: each linear's precision and shape, the heads, and
        the family's extra work (norms after the blocks, activation, soft-cap)."""
        first = self.layers[0]
        linears = tuple((view.kind, view.inputs, view.outputs) for view in (first.qkv, first.o, first.gate_up, first.down))
        extra = (sum(bool(pointer) for pointer in first.norms), self.dims.activation, self.dims.softcap != 0)
        return linears + (self.dims.heads, self.dims.kv_heads, self.dims.head_dim) + extra


def plan(dtype: torch.dtype, layers: list, windows: list[int | None], shape: Shape) -> Plan | None:
    """`layers`: the decoder's (norms, qkv, o, gate_up, down) per layer, the norms' weights
    in the Norms order (None where absent); `windows`: each layer's (None: full)."""
    lib = kernel()
    if lib is None or dtype != torch.bfloat16:
        return None
    keep: list[torch.Tensor] = []
    built = []
    for (norms, *linears), window in zip(layers, windows, strict=True):
        views = [_linear(module, keep) for module in linears]
        if any(view is None for view in views) or any(n is not None and n.dtype != torch.bfloat16 for n in norms):
            return None
        weights = [None if n is None else n.detach().contiguous() for n in norms]
        keep.extend(w for w in weights if w is not None)
        pointers = (_ptr * 4)(*(None if w is None else w.data_ptr() for w in weights))
        built.append(Layer(pointers, *views, None, None, window or 0))
    hidden, inter = layers[0][0][0].shape[0], layers[0][3].weight.shape[0] // 2
    return Plan(built, Dims(hidden, shape.heads, shape.kv_heads, shape.head_dim, inter, 0, shape.eps, shape.scaling, shape.norm_offset,
                            shape.activation, shape.softcap), keep)
