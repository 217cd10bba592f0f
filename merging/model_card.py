"""The README.md written next to a merge: Hub front matter, the config, how to use it."""

from __future__ import annotations

import yaml

from merging.config import MergeConfig


def model_card(config: MergeConfig, name: str, warnings: list[str]) -> str:
    front = {
        "base_model": list(dict.fromkeys(config.models)),
        "library_name": "transformers",
        "tags": ["merge", "slerp", "slerp-arena"],
    }
    models = "\n".join(f"- {m}" for m in dict.fromkeys(config.models))
    notes = "".join(f"\n- {w}" for w in warnings)
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {name}

This model is a SLERP merge of two language models, made with Slerp Arena
(mergekit-compatible: the configuration below runs unchanged with `mergekit-yaml`).

## Merged models
{models}

Base model (t = 0): `{config.base_model}`.
{f"{chr(10)}## Warnings{notes}{chr(10)}" if warnings else ""}
## Configuration

```yaml
{config.to_yaml().strip()}
```

## Usage

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}", dtype="auto")
messages = [{{"role": "user", "content": "What is the capital of France?"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
output = model.generate(**inputs, max_new_tokens=64)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""
