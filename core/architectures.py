"""Each model family described once, as data: the merge planner (which tensors make a
layer), the lean decode loop (which modules, norms, activation, soft-caps and windows),
`fits-where`, the model card and the leak flags all read these. Adding a family is adding
a description and its tests; no other module of the app lists families or compares with
one (tests/test_architectures.py reads them all for it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Norms:
    """A layer's RMSNorm weights by where they sit (module paths under the layer), None
    where the family has none there. Llama's "post_attention_layernorm" is the norm
    before the MLP; Gemma2's is the one after attention, before the residual add."""
    before_attention: str = "input_layernorm"
    after_attention: str | None = None
    before_mlp: str = "post_attention_layernorm"
    after_mlp: str | None = None


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json's model_type values
    # The checkpoint's tensors, as the merge planner reads them.
    layer_pattern: str = r"^model\.layers\.(\d+)\."
    vocab_tensors: tuple[str, ...] = ("model.embed_tokens.weight", "lm_head.weight")  # rows may be truncated
    tied: tuple[tuple[str, str], ...] = (("lm_head.weight", "model.embed_tokens.weight"),)  # absent tensor: its weights
    num_layers_key: str = "num_hidden_layers"
    # One decoder layer's modules (paths under model.layers.N), as the lean loop reads them:
    # q/k/v run as one fused matmul, gate/up as another ([gate | up]).
    qkv: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    attention_out: str = "self_attn.o_proj"
    gate_up: tuple[str, ...] = ("mlp.gate_proj", "mlp.up_proj")
    down: str = "mlp.down_proj"
    norms: Norms = field(default_factory=Norms)
    norm_offset: float = 0.0  # Gemma stores w - 1: its norms scale by (1 + w), in float32 before rounding
    activation_key: str = "hidden_act"  # the config key naming the MLP's activation
    embedding_scaled: bool = False  # Gemma: embeddings times sqrt(hidden), rounded to the model's dtype
    attention_softcap_key: str | None = None  # config key: scores = cap * tanh(scores / cap)
    final_softcap_key: str | None = None  # config key: the same on the output logits
    # Which layers slide: "none", "every" (config.sliding_window on every layer) or
    # "layer_types" (config.layer_types[i] == "sliding_attention").
    sliding: str = "none"
    lean: bool = False  # the lean decode loop runs it (tests: greedy identity, logits, kept caches)
    chat_note: str = ""  # how its chat template treats messages, for the model card
    # What a reply would call it or its maker: a blind reply saying so gives it away (makers
    # whose names are everyday words, Google and Microsoft, are left out: they flag too much).
    called: tuple[str, ...] = ()

    def layer_of(self, tensor_name: str) -> int | None:
        match = re.match(self.layer_pattern, tensor_name)
        return int(match.group(1)) if match else None

    def rename_layer(self, tensor_name: str, new_index: int) -> str:
        match = re.match(self.layer_pattern, tensor_name)
        assert match, tensor_name
        return tensor_name[: match.start(1)] + str(new_index) + tensor_name[match.end(1):]

    def windows(self, config: object) -> list[int | None]:
        """Per layer, how many positions back attention sees (None: all of them)."""
        layers, window = config.num_hidden_layers, getattr(config, "sliding_window", None)
        if self.sliding == "every":
            return [window] * layers
        if self.sliding == "layer_types":
            return [window if kind == "sliding_attention" else None for kind in config.layer_types[:layers]]
        return [None] * layers


NO_SYSTEM_ROLE = "its template has no system role: a system prompt is folded into the first user message"
FAMILIES = (
    Family("Llama", ("llama",), lean=True, called=("Llama", "Meta")),
    Family("Mistral", ("mistral",), sliding="every", lean=True, called=("Mistral",)),
    Family("Qwen2", ("qwen2",), sliding="layer_types", lean=True, called=("Qwen", "Alibaba")),
    Family("Qwen3", ("qwen3",), sliding="layer_types", called=("Qwen", "Alibaba")),  # q/k norms: merged, chats through generate
    Family("Gemma", ("gemma",), norm_offset=1.0, embedding_scaled=True, lean=True,
           chat_note=NO_SYSTEM_ROLE,
           called=("Gemma",)),
    Family("Gemma2", ("gemma2",), norms=Norms("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                                              "post_feedforward_layernorm"),
           norm_offset=1.0, activation_key="hidden_activation", embedding_scaled=True,
           attention_softcap_key="attn_logit_softcapping", final_softcap_key="final_logit_softcapping", sliding="layer_types",
           lean=True, chat_note=NO_SYSTEM_ROLE,
           called=("Gemma",)),
    Family("Phi-3", ("phi3",), qkv=("self_attn.qkv_proj",), gate_up=("mlp.gate_up_proj",),  # fused in the checkpoint
           sliding="every", called=("Phi-3",)),
)
GENERIC = Family("generic (model.layers.N.)", ())


def family_of(model_type: object) -> Family:
    """The description of a config's model_type; the generic one (tensors named
    model.layers.N., merged but chatted through generate) for any other."""
    return next((f for f in FAMILIES if model_type in f.model_types), GENERIC)
