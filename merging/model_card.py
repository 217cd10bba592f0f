"""The README.md written next to a merge: Hub front matter, the config, how to use it."""

from __future__ import annotations

import re

import yaml

from core.architectures import Family
from core.errors import UserError
from core.sources import hub_id_of, kind_of
from merging.config import MergeConfig


def hub_base_models(models: list[str]) -> list[str]:
    """What the Hub accepts as `base_model`: Hub ids only (a bundled model as its
    upstream repo); local folders and files are left out."""
    ids = []
    for ref in models:
        try:
            ids.append(hub_id_of(ref))
        except UserError:  # not a model reference at all: nothing the Hub could link
            continue
    return [i for i in dict.fromkeys(ids) if i]


def mergekit_note(models: list[str]) -> str:
    """Whether mergekit can run the configuration as written: it reads Hub ids and folders,
    not a bundled GGUF or a .gguf file (those are named by their Hub id where they have one)."""
    other = [m for m in dict.fromkeys(models) if kind_of(m) not in ("hub", "folder")]
    if not other:
        return "mergekit-compatible: the configuration below runs unchanged with `mergekit-yaml`"
    swaps = ", ".join(f"`{m}` with `{hub_id_of(m)}`" if hub_id_of(m) else f"`{m}` with a safetensors folder of it" for m in other)
    return f"mergekit-compatible: the configuration below runs with `mergekit-yaml` after replacing {swaps}"


def architecture_note(family: Family) -> str:
    """The family as its description gives it: how Slerp Arena chats with it, and its template's quirk."""
    path = ("Slerp Arena chats with it on its lean decode loop on CPU (a kept cache per conversation), through "
            "transformers' generate on a GPU" if family.lean else "Slerp Arena chats with it through transformers' generate")
    return f"{family.name}. {path}" + (f"; {family.chat_note}." if family.chat_note else ".")


def model_card(config: MergeConfig, name: str, warnings: list[str], family: Family) -> str:
    front: dict = {"base_model": hub_base_models(config.models)} if hub_base_models(config.models) else {}
    front.update({"library_name": "transformers", "tags": ["merge", "slerp", "slerp-arena"]})
    models = "\n".join(f"- {m}" for m in dict.fromkeys(config.models))
    notes = "".join(f"\n- {w}" for w in warnings)
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {name}

This model is a SLERP merge of two language models, made with Slerp Arena
({mergekit_note(config.models)}).

## Merged models
{models}

Base model (t = 0): `{config.base_model}`.

Architecture: {architecture_note(family)}
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


def replace_section(card: str, key: str, body: str) -> str:
    """The card with `body` between the `key` markers: replaced where the markers are,
    appended once where they are not."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(card):
        return pattern.sub(lambda _: block, card, count=1)
    return f"{card.rstrip()}\n\n{block}\n"
