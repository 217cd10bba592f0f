"""Tiny random models per architecture, saved with save_pretrained, so tests exercise the
same loading code as real checkpoints on a few hundred KB of weights."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from core.architectures import FAMILIES

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
GEMMA_LIKE = (  # rejects the system role, as Gemma's template does
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<start_of_turn>' + m['role'] + '\\n' + m['content'] + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "user assistant system hello how are you? I am fine, thank you.",
    "SLERP merges two language models by spherical interpolation of their weights.",
] * 20


def tiny_tokenizer(vocab_size: int = 320, chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = chat_template
    return fast


def tiny_config(arch: str, vocab_size: int, num_layers: int = 4, hidden: int = 32, intermediate: int | None = None,
                sliding_window: int = 64, max_positions: int = 256):
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or 2 * hidden, num_hidden_layers=num_layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0)
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=sliding_window, tie_word_embeddings=False)
    if arch == "qwen2":  # its upper half of layers slides, as a Qwen2 with use_sliding_window
        return Qwen2Config(**common, use_sliding_window=True, sliding_window=sliding_window, max_window_layers=num_layers // 2,
                           tie_word_embeddings=True)
    if arch == "qwen3":
        return Qwen3Config(**common, head_dim=8, tie_word_embeddings=True)
    if arch == "gemma":
        return GemmaConfig(**common, head_dim=8, tie_word_embeddings=True)
    if arch == "gemma2":
        # Caps near the tiny model's scores (about 0.01) and logits (about 0.1), and a scalar
        # other than head_dim, so that a missing cap or a misread scaling changes the numbers.
        return Gemma2Config(**common, head_dim=8, sliding_window=sliding_window, query_pre_attn_scalar=1,
                            attn_logit_softcapping=0.02, final_logit_softcapping=0.1, tie_word_embeddings=True)
    raise ValueError(arch)


def lean_families() -> list[str]:
    """The model_type of each family the lean decode loop runs, as the descriptions say."""
    return [family.model_types[0] for family in FAMILIES if family.lean]


def build_tiny_model(folder: Path, arch: str, seed: int, *, num_layers: int = 4, vocab_size: int | None = None,
                     chat_template: str | None = CHATML, dtype: torch.dtype = torch.bfloat16, hidden: int = 32,
                     intermediate: int | None = None, sliding_window: int = 64, max_positions: int = 256) -> Path:
    tokenizer = tiny_tokenizer(chat_template=chat_template)
    vocab = vocab_size or len(tokenizer)
    torch.manual_seed(seed)
    config = tiny_config(arch, vocab, num_layers, hidden, intermediate, sliding_window, max_positions)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():  # random init leaves norms at exactly 1.0; perturb them so merges see real angles
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
