"""A lean decode loop for the families whose description says `lean` (core/architectures.py:
Llama, Mistral, Qwen2, Gemma, Gemma2) on CPU.

transformers' `generate` spends most of a small model's token in Python (cache objects,
masks, processors, hooks), so this loop runs the same weights with less around them
(`python -m inference bench` prints both; figures in docs/benchmarks.md):
- q/k/v and gate/up are one matmul each (quantize.fuse_linears);
- the KV cache is preallocated per reply, in float32, because two small float32 bmm calls
  beat SDPA's CPU kernel for one query against the cache; a conversation's next turn
  starts from its last turn's cache and prefills only the new tokens (kept_caches.py);
- only the last position goes through the lm_head;
- on a bf16 model whose linears have C kernels, a decoded token runs through all layers
  in one C call (decode_step.py), with no torch op dispatch between the matmuls.

What differs between families is read from their description: where the norms sit and
whether they scale by (1 + w), the activation, the embedding scale, soft-capped attention
scores and logits, and which layers slide. A sliding layer attends to the last `window`
positions of a cache that keeps every position, so a conversation longer than the window
stays on this loop, as transformers masks it.

Prefill runs the same ops on the whole prompt as transformers does: its logits equal the
model's own forward (tests/test_decoder.py), except where scores are soft-capped, which
SDPA cannot do: that attention runs in float32 blocks, within the decode bound. A prefill that continues a kept cache attends to the cached
positions through an explicit mask. Decode attention computes in float32 where
transformers rounds through bf16, so logits can differ in the last bf16 bit.

Anything else (another family, a GPU) goes through `generate`;
SLERP_ARENA_DECODER=transformers forces that everywhere, for comparison.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor, RepetitionPenaltyLogitsProcessor

from core.architectures import family_of
from inference import decode_step
from inference.attention import attend_kept
from inference.cpu_kernels import bf16_linear_cpu, kernel_wins
from inference.quantize import fuse_linears
from inference.scheduler import Scheduler
from inference.sharing import Cores

# The MLP activations the loop (and decode_step.c, by the same index) computes, as transformers' ACT2FN does.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu, "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh")}
ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # a fixed table of angles (dynamic ones change with length)
DECODER_ENV = "SLERP_ARENA_DECODER"  # "transformers": always use generate
PROMPT_ROWS = (16, 64)  # prompt lengths tried in the C step, longest first (csrc/decode_step.c takes 64 rows a pass)
CAPPED_BLOCK = 128  # queries per block of soft-capped prompt attention


def unsupported_reason(model: nn.Module) -> str | None:
    """Why `model` must go through generate, or None when the lean loop can run it."""
    config = model.config
    if os.environ.get(DECODER_ENV, "").lower() == "transformers":
        return f"{DECODER_ENV}=transformers"
    family = family_of(config.model_type)
    if not family.lean:
        return f"architecture {config.model_type}"
    if next(model.parameters()).device.type != "cpu":
        return "not on the CPU"
    # A subclass of nn.Linear (bitsandbytes' Linear8bitLt) keeps its weights its own way.
    odd = next((type(m).__name__ for m in model.modules() if isinstance(m, nn.Linear) and type(m) is not nn.Linear), None)
    if odd is not None:
        return f"{odd} layers"
    if getattr(config, "use_bidirectional_attention", False):  # Gemma2's option: not a causal decoder
        return "bidirectional attention"
    activation = getattr(config, family.activation_key, None)
    if activation not in ACTIVATIONS:
        return f"activation {activation}"
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in ROPE_TYPES:
        return f"rope type {rope}"
    return None


def _kernel_linear(module: nn.Module) -> Callable[..., torch.Tensor]:
    """The linear as the loop calls it, (x, sizes) -> y, `sizes` as in cpu_kernels._product:
    a plain nn.Linear through the CPU kernel for one token (torch's matmul for a prompt);
    int8 and FP8 linears pick theirs already."""
    if type(module) is not nn.Linear:
        return module
    if module.weight.dtype != torch.bfloat16:  # a float32 model: torch's GEMM, a prompt's rows on their own
        return lambda x, sizes=None: module(x) if sizes is None else torch.cat([module(part) for part in x.split(sizes)])
    weight, bias = module.weight, module.bias
    return lambda x, sizes=None: bf16_linear_cpu(x, weight, sizes) if bias is None else bf16_linear_cpu(x, weight, sizes) + bias


class Cache(list):
    """A reply's keys and values per layer, and the same bound for the C step (or None),
    which points into them: the cache must outlive its `bound`, as it does by holding it."""
    bound: decode_step.Bound | None


@dataclass
class _Layer:
    norms: tuple[torch.Tensor | None, ...]  # before attention, after it, before the MLP, after it (Norms' order)
    qkv: Callable[..., torch.Tensor]  # (x, sizes=None) -> y, as _kernel_linear
    o: Callable[..., torch.Tensor]
    gate_up: Callable[..., torch.Tensor]
    down: Callable[..., torch.Tensor]
    window: int | None  # how many positions back it attends (None: all)


def _module(layer: nn.Module, path: str | None) -> nn.Module | None:
    return None if path is None else functools.reduce(getattr, path.split("."), layer)


class LeanDecoder:
    """The model's weights arranged for the loop; one per model, shared by its replies
    (each reply has its own cache)."""

    def __init__(self, model: nn.Module, cores: Cores):
        config, body = model.config, model.model
        family = family_of(config.model_type)
        attention = body.layers[0].self_attn
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.scaling = attention.head_dim, attention.scaling
        self.eps, self.norm_offset = config.rms_norm_eps, family.norm_offset
        self.activation = ACTIVATIONS[getattr(config, family.activation_key)]
        self.softcap = getattr(config, family.attention_softcap_key, None) if family.attention_softcap_key else None
        self.final_softcap = getattr(config, family.final_softcap_key, None) if family.final_softcap_key else None
        self.dtype = body.embed_tokens.weight.dtype
        # As Gemma's scaled embedding: sqrt(hidden) rounded to the model's dtype, then the product.
        self.embed_scale = torch.tensor(config.hidden_size ** 0.5, dtype=self.dtype) if family.embedding_scaled else None
        self.embed, self.norm, self.lm_head = body.embed_tokens.weight, body.norm.weight, _kernel_linear(model.get_output_embeddings())
        self.inv_freq, self.rope_scale = body.rotary_emb.inv_freq.float(), body.rotary_emb.attention_scaling
        self.windows = family.windows(config)
        parts = []
        for layer in body.layers:
            norms = [_module(layer, path) for path in (family.norms.before_attention, family.norms.after_attention,
                                                         family.norms.before_mlp, family.norms.after_mlp)]
            parts.append(([None if n is None else n.weight for n in norms],
                          fuse_linears([_module(layer, path) for path in family.qkv]), _module(layer, family.attention_out),
                          fuse_linears([_module(layer, path) for path in family.gate_up]), _module(layer, family.down)))
        self.layers = [_Layer(tuple(norms), *map(_kernel_linear, linears), window)
                       for (norms, *linears), window in zip(parts, self.windows, strict=True)]
        self._rope = (torch.empty(0, self.head_dim, dtype=self.dtype),) * 2
        self._rope_lock = threading.Lock()
        # One token through all layers in one C call, where the model allows (decode_step.py)
        # and the call is faster than the torch loop here.
        step = decode_step.plan(self.dtype, parts, self.windows, decode_step.Shape(
            self.heads, self.kv_heads, self.head_dim, self.eps, self.scaling, self.norm_offset,
            list(ACTIVATIONS.values()).index(self.activation), self.softcap or 0.0))
        self.step = step if step is not None and self._step_wins(step) else None
        self.prompt_rows = self._prompt_rows(self.step) if self.step else 0
        self.scheduler = Scheduler(self, cores)  # its decode steps, shared by every reply of the model

    def _step_wins(self, step: decode_step.Plan) -> bool:
        """One layer, at position 31 of a zeroed cache: the C step against the torch loop's
        layer, with this model's weights (the same shapes and precisions count once)."""
        position = 31
        cache = [tuple(torch.zeros(self.kv_heads, position + 1, self.head_dim) for _ in range(2))]
        one = step.first_layer().bind(cache)
        x = self.embed[:1].clone()
        cos, sin = self.rope(position + 1)
        angles = cos[position:position + 1, None], sin[position:position + 1, None]

        def in_c() -> None:
            decode_step.step_batch([one], x.clone(), cos[position:position + 1], sin[position:position + 1], [position])

        def in_torch() -> None:
            self._layer(self.layers[0], x, lambda qkv: self._attend(qkv, self.layers[0], cache[0], position, *angles))

        with torch.inference_mode():
            return kernel_wins(("step", self.dtype, *step.shapes()), in_c, in_torch)

    def _prompt_rows(self, step: decode_step.Plan) -> int:
        """The longest prompt (of PROMPT_ROWS) whose rows go through the C step together
        (`prefill`), not through the torch loop's GEMMs: where one layer ran faster in C
        here at that many rows. Short prompts are a chat's common case (a new turn after a
        kept cache), and the torch loop's ~25 ops a layer cost more than their products.
        Measured in a thread of its own, as the scheduler's: torch's ops ran slower there
        than on the main thread (OpenMP gives each thread its own team)."""
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prompt rows") as measuring:
            return measuring.submit(self._measure_prompt_rows, step).result()

    def _measure_prompt_rows(self, step: decode_step.Plan) -> int:
        x = self.embed[:max(PROMPT_ROWS)].clone()
        cos, sin = self.rope(max(PROMPT_ROWS))
        for rows in sorted(PROMPT_ROWS, reverse=True):
            cache = [tuple(torch.zeros(self.kv_heads, rows, self.head_dim) for _ in range(2))]
            one = step.first_layer().bind(cache)
            angles = cos[:rows, None], sin[:rows, None]

            def in_c(rows: int = rows, one: decode_step.Bound = one) -> None:
                decode_step.step_batch([one] * rows, x[:rows].clone(), cos[:rows], sin[:rows], list(range(rows)))

            def in_torch(rows: int = rows, cache: list = cache, angles: tuple = angles) -> None:
                self._layer(self.layers[0], x[:rows], lambda qkv: self._attend(qkv, self.layers[0], cache[0], 0, *angles), [rows])

            with torch.inference_mode():
                if kernel_wins(("prompt", rows, self.dtype, *step.shapes()), in_c, in_torch):
                    return rows
        return 0

    def rope(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions 0..length-1, computed as transformers' rotary embedding
        does (float32 angles, then the model dtype), so the values are identical."""
        with self._rope_lock:
            if self._rope[0].shape[0] < length:
                positions = torch.arange(max(length, 2 * self._rope[0].shape[0]), dtype=torch.float32)
                freqs = positions[:, None] * self.inv_freq[None]
                angles = torch.cat((freqs, freqs), dim=-1)
                sin = (angles.sin() * self.rope_scale).to(self.dtype)
                half = self.head_dim // 2
                sin[:, :half] = -sin[:, :half]  # rotate_half negates the first half: roll(x) * this sin is exact
                self._rope = ((angles.cos() * self.rope_scale).to(self.dtype), sin)
            return self._rope

    def new_cache(self, length: int) -> Cache:
        """Per layer, keys and values for `length` positions: [kv_heads, length, head_dim]."""
        shape = (self.kv_heads, length, self.head_dim)
        return self._bound(Cache((torch.empty(shape, dtype=torch.float32), torch.empty(shape, dtype=torch.float32)) for _ in self.layers))

    def _bound(self, cache: Cache) -> Cache:
        cache.bound = self.step.bind(cache) if self.step else None
        return cache

    def cache_for(self, prompt: list[int], length: int, conversation: str = "") -> tuple[Cache, int]:
        """A cache for `length` positions and how many of `prompt`'s first tokens it holds
        already: the conversation's kept cache where it shares a start with `prompt` (grown
        by a copy if too short), else a new one holding nothing."""
        taken = self.scheduler.kept.take(conversation, prompt)
        if taken is None:
            return self.new_cache(length), 0
        layers, reused = taken
        capacity = layers[0][0].shape[1]
        if capacity >= length:
            return self._bound(Cache(layers)), reused
        # With room for two more turns like this one: a conversation grows every turn, and a
        # copy into fresh pages took 25 ms of a 0.4 s first token at 1,400 positions
        # (SmolLM2). The kept store counts the whole capacity against its budget.
        cache = self.new_cache(length + 2 * (length - reused))
        for (keys, values), (old_keys, old_values) in zip(cache, layers, strict=True):
            keys[:, :reused], values[:, :reused] = old_keys[:, :reused], old_values[:, :reused]
        return cache, reused

    def _norm(self, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """As transformers' RMSNorm: normalized in float32, then Llama's rounds and scales
        by w, Gemma's scales by (1 + w) in float32 and rounds; x itself where none sits."""
        if weight is None:
            return x
        normalized = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        if self.norm_offset:
            return (normalized * (self.norm_offset + weight.float())).to(x.dtype)
        return weight * normalized.to(x.dtype)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = F.embedding(ids, self.embed)
        return x if self.embed_scale is None else x * self.embed_scale

    def _logits(self, x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        """float32 logits of hidden rows x, soft-capped where the family caps them (in the
        model's dtype, as transformers does)."""
        logits = self.lm_head(self._norm(x, self.norm), sizes)
        if self.final_softcap:
            logits = (logits / self.final_softcap).tanh() * self.final_softcap
        return logits.float()

    def forward(self, ids: torch.Tensor, position: int, cache: Cache) -> torch.Tensor:
        """float32 logits [1, vocab] of the last of `ids` ([1, n]), which sit at `position`
        onward after what the cache holds; fills the cache there."""
        n = ids.shape[1]
        if n == 1 and cache.bound is not None:
            return self._through_step([int(ids[0, 0])], [position], [cache], [0])
        return self.prefill([(ids, position, cache)])[0]

    def prompt_in_c(self, length: int) -> bool:
        """Whether a prompt of `length` new tokens goes through the C step (`prefill`)."""
        return self.step is not None and length <= self.prompt_rows

    def prefill(self, parts: list[tuple[torch.Tensor, int, Cache]], lengths: list[int] | None = None) -> list[torch.Tensor]:
        """The float32 logits [1, vocab] of the last token of each part (ids [1, n] at
        `position` onward after what its cache holds), filling each cache there. A part of
        a prompt of at most `prompt_rows` tokens (`lengths`: each part's prompt, where a
        part is a chunk of it; default: the part's own) goes through the C step, its tokens
        as rows of one batch, each row that token decoded alone, so a reply's next token
        can ride along as a part of one. The others' rows go through each linear together,
        so prompts arriving at once share its weights' widening (cpu_kernels._widened)
        instead of paying it each, and each part's rows come out as they would alone
        (cpu_kernels._product's `sizes`)."""
        lengths = lengths or [ids.shape[1] for ids, _, _ in parts]
        stepped = [i for i, ((_, _, cache), n) in enumerate(zip(parts, lengths, strict=True))
                   if cache.bound is not None and self.prompt_in_c(n)]
        rest = [i for i in range(len(parts)) if i not in stepped]
        logits: dict[int, torch.Tensor] = {}
        if stepped:
            rows = [(int(token), parts[i][1] + k, parts[i][2]) for i in stepped for k, token in enumerate(parts[i][0][0])]
            lasts = [end - 1 for end in itertools.accumulate(parts[i][0].shape[1] for i in stepped)]
            logits.update(zip(stepped, self._through_step(*map(list, zip(*rows, strict=True)), lasts).split(1), strict=True))
        if rest:
            logits.update(zip(rest, self._prefill_in_torch([parts[i] for i in rest]), strict=True))
        return [logits[i] for i in range(len(parts))]

    def _prefill_in_torch(self, parts: list[tuple[torch.Tensor, int, Cache]]) -> list[torch.Tensor]:
        sizes = [ids.shape[1] for ids, _, _ in parts]
        x = torch.cat([self._embed(ids[0]) for ids, _, _ in parts])  # [rows, hidden]
        angles = [tuple(t[position:position + n, None] for t in self.rope(position + n))
                  for (_, position, _), n in zip(parts, sizes, strict=True)]
        for index, layer in enumerate(self.layers):
            def attend(qkv: torch.Tensor, layer: _Layer = layer, index: int = index) -> torch.Tensor:
                return torch.cat([self._attend(rows, layer, cache[index], position, *rope)
                                  for rows, (_, position, cache), rope in zip(qkv.split(sizes), parts, angles, strict=True)])
            x = self._layer(layer, x, attend, sizes)
        last = torch.cumsum(torch.tensor(sizes), 0) - 1
        return list(self._logits(x[last], [1] * len(parts)).split(1))

    def forward_batch(self, tokens: list[int], positions: list[int], caches: list[Cache]) -> torch.Tensor:
        """float32 logits [rows, vocab]: one token of each of several replies (token m at
        positions[m] after what caches[m] holds), in one pass over the weights where the C
        step runs; each row is what `forward` gives that reply alone."""
        if len(tokens) == 1 or any(cache.bound is None for cache in caches):
            return torch.cat([self.forward(torch.tensor([[t]]), p, c) for t, p, c in zip(tokens, positions, caches, strict=True)])
        return self._through_step(tokens, positions, caches, list(range(len(tokens))))

    def _through_step(self, tokens: list[int], positions: list[int], caches: list[Cache], wanted: list[int]) -> torch.Tensor:
        """The C step on rows of tokens (token m at positions[m] after what caches[m] holds;
        rows may share a cache at consecutive positions, a prompt's, each attending to the
        rows before it): the float32 logits of the rows `wanted`."""
        x = self._embed(torch.tensor(tokens)).contiguous()  # [rows, hidden]
        cos, sin = self.rope(max(positions) + 1)
        at = torch.tensor(positions)
        decode_step.step_batch([cache.bound for cache in caches], x, cos[at].contiguous(), sin[at].contiguous(), positions)
        return self._logits(x[wanted], [1] * len(wanted))  # each row as alone: torch's GEMM may sum a row otherwise in another batch

    def _layer(self, layer: _Layer, x: torch.Tensor, attend: Callable[[torch.Tensor], torch.Tensor],
               sizes: list[int] | None = None) -> torch.Tensor:
        """x [rows, hidden] through one layer in torch; `attend` takes the rows' fused q/k/v;
        `sizes`: the rows are several prompts' (prefill)."""
        before_attention, after_attention, before_mlp, after_mlp = layer.norms
        x = x + self._norm(layer.o(attend(layer.qkv(self._norm(x, before_attention), sizes)), sizes), after_attention)
        gate, up = layer.gate_up(self._norm(x, before_mlp), sizes).chunk(2, dim=-1)
        return x + self._norm(layer.down(self.activation(gate) * up, sizes), after_mlp)

    def _attend(self, qkv: torch.Tensor, layer: _Layer, cache: tuple[torch.Tensor, torch.Tensor], position: int, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        """One prompt's (or token's) fused q/k/v rows [n, ...] at `position` onward: rotated,
        written into its layer cache, attended; [n, heads * head_dim] in the model dtype."""
        keys, values = cache
        n, heads, kv, d = qkv.shape[0], self.heads, self.kv_heads, self.head_dim
        end = position + n
        qkv = qkv.view(n, heads + 2 * kv, d)
        qk = qkv[:, :heads + kv]
        qk = qk * cos + qk.roll(d // 2, dims=-1) * sin  # rotate_half(qk) * sin, with the sign in `sin`
        keys[:, position:end] = qk[:, heads:].transpose(0, 1)
        values[:, position:end] = qkv[:, heads + kv:].transpose(0, 1)
        slides = layer.window is not None and end > layer.window  # some position cannot see back to the start
        if n == 1:
            start = end - layer.window if slides else 0
            q = qk[0, :heads].reshape(kv, heads // kv, d).float()  # query heads grouped by their kv head
            scores = torch.bmm(q, keys[:, start:end].transpose(1, 2)).mul_(self.scaling)
            if self.softcap:
                scores = scores.div_(self.softcap).tanh_().mul_(self.softcap)
            return torch.bmm(scores.softmax(dim=-1), values[:, start:end]).to(qkv.dtype).view(1, heads * d)
        q = qk[:, :heads].transpose(0, 1)
        if self.softcap:
            return self._capped(q, keys, values, position, layer.window)
        if position == 0 and not slides:
            k, v = qk[:, heads:].transpose(0, 1), qkv[:, heads + kv:].transpose(0, 1)
            return F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True, scale=self.scaling,
                                                  enable_gqa=True)[0].transpose(0, 1).reshape(n, heads * d)
        if position == 0:  # a window shorter than the prompt: SDPA with the mask transformers builds
            k, v = qk[:, heads:].transpose(0, 1), qkv[:, heads + kv:].transpose(0, 1)
            return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=_visible(position, end, layer.window),
                                                  scale=self.scaling, enable_gqa=True)[0].transpose(0, 1).reshape(n, heads * d)
        # The rest of a prompt whose start the cache holds: each new position sees the cache and itself.
        attended = None if slides else attend_kept(qk[:, :heads], keys, values, position, self.scaling)
        if attended is None:  # in float32 on the cache as it is, as decode attends: no copy of the whole cache per layer
            visible = _visible(position, end, layer.window)  # built only here: the C kernel masks as it goes
            attended = F.scaled_dot_product_attention(q.float()[None], keys[None, :, :end], values[None, :, :end], attn_mask=visible,
                                                      scale=self.scaling, enable_gqa=True)[0].transpose(0, 1).reshape(n, heads * d)
            attended = attended.to(qkv.dtype)
        return attended

    def _capped(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, position: int, window: int | None) -> torch.Tensor:
        """Soft-capped attention (SDPA cannot cap) of q [heads, n, d] at `position` onward
        against keys and values [kv_heads, end, d], in float32 as decode attends, a block of
        queries at a time: each block's scores reach only the positions it can see, so a
        long prompt neither computes the masked half nor holds heads x n x n scores at once.
        transformers' eager attention rounds the scores through bf16 instead: the logits
        agree within the decode bound (tests/test_decoder.py)."""
        heads, n, d = q.shape
        kv, group = self.kv_heads, heads // self.kv_heads
        out = torch.empty(kv, group, n, d)
        grouped = q.float().view(kv, group, n, d)  # query heads by their kv head, as repeat_kv pairs them
        for start in range(0, n, CAPPED_BLOCK):
            stop = min(n, start + CAPPED_BLOCK)
            end = position + stop  # the last position this block sees
            first = max(0, position + start - window + 1) if window else 0  # the first one any of its rows sees
            rows = grouped[:, :, start:stop].reshape(kv, group * (stop - start), d)
            # cap * tanh(s / cap) is 2 cap * sigmoid(2 s / cap) - cap, and softmax drops the
            # constant: torch's sigmoid runs 4x faster than its tanh on this CPU class.
            scores = torch.bmm(rows, keys[:, first:end].transpose(1, 2)).mul_(2 * self.scaling / self.softcap).sigmoid_()
            scores = scores.mul_(2 * self.softcap).view(kv, group, stop - start, end - first)
            # Only the block's own positions can be hidden, unless its window starts inside what it sees.
            hidden_from = first if window and position + stop > window else position + start
            visible = _visible(position + start, end, window)[:, hidden_from:]
            scores[..., hidden_from - first:].masked_fill_(~visible, float("-inf"))
            weights = scores.softmax(dim=-1).view(kv, group * (stop - start), end - first)
            out[:, :, start:stop] = torch.bmm(weights, values[:, first:end]).view(kv, group, stop - start, d)
        return out.view(heads, n, d).to(q.dtype).transpose(0, 1).reshape(n, heads * d)


def _visible(position: int, end: int, window: int | None) -> torch.Tensor:
    """[end - position, end]: which cached positions each new one attends to (itself and
    before it, within its window), as transformers' causal and sliding masks."""
    rows, columns = torch.arange(position, end)[:, None], torch.arange(end)[None]
    visible = columns <= rows
    return visible if window is None else visible & (columns > rows - window)


def lean_decoder(model: nn.Module, cores: Cores) -> LeanDecoder | None:
    """A decoder for `model` (its LoadedModel builds one and keeps it), or None where
    generate must run it."""
    if unsupported_reason(model):
        return None
    try:
        return LeanDecoder(model, cores)
    except AttributeError:  # transformers' module tree is not its API: a renamed part sends the model to generate
        logging.getLogger(__name__).warning("lean decoder unavailable for %s", model.config.model_type, exc_info=True)
        return None


def processors_for(prompt_length: int, repetition_penalty: float, min_new_tokens: int, eos: list[int],
                   sampler: object | None) -> LogitsProcessorList:
    """The processors generate builds from the same arguments, in its order (its own
    first, then the caller's sampler), so both paths pick the same tokens."""
    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(float(repetition_penalty)))
    if min_new_tokens > 0:
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_length, min_new_tokens, torch.tensor(eos)))
    if sampler is not None:
        processors.append(sampler)
    return processors
