"""mergekit-compatible SLERP config: parse, validate, write back.

The YAML users paste comes from model cards made with mergekit / LazyMergekit, so the
accepted shape is mergekit's, and `to_dict` writes the same shape back (round trip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError

DTYPES = ("bfloat16", "float16", "float32")
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
KNOWN_KEYS = {
    "slices", "models", "merge_method", "base_model", "parameters", "dtype", "out_dtype",
    "tokenizer_source", "chat_template", "name",
}


@dataclass(frozen=True)
class TRule:
    """One entry of `parameters.t`: the first rule whose filter is a substring of the
    tensor name wins; `filter=None` matches every tensor. `value` is a gradient (a single
    number is a gradient of length one)."""

    value: tuple[float, ...]
    filter: str | None = None


@dataclass(frozen=True)
class Source:
    model: str
    layer_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class Slice:
    base: Source
    other: Source
    t_rules: tuple[TRule, ...] | None = None  # slice-level override of the global t


@dataclass(frozen=True)
class MergeConfig:
    base_model: str
    other_model: str
    t_rules: tuple[TRule, ...]
    slices: tuple[Slice, ...] | None = None  # None: `models:` form, whole models
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def models(self) -> tuple[str, str]:
        return self.base_model, self.other_model

    def to_dict(self) -> dict[str, Any]:
        """The mergekit-shaped mapping, ready for yaml.safe_dump."""
        out: dict[str, Any] = {}
        if self.slices is None:
            out["models"] = [{"model": self.base_model}, {"model": self.other_model}]
        else:
            out["slices"] = [_slice_to_dict(s) for s in self.slices]
        out["merge_method"] = "slerp"
        out["base_model"] = self.base_model
        out["parameters"] = {"t": _t_to_yaml(self.t_rules)}
        for key in ("dtype", "out_dtype", "tokenizer_source", "chat_template"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_ConfigDumper, sort_keys=False, indent=2)


class _ConfigDumper(yaml.SafeDumper):
    """The layout of mergekit / LazyMergekit examples: block mappings and lists of
    mappings, flow lists of numbers (`value: [0, 0.5, 1]`), integral floats as ints."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (int, float)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_float(dumper: yaml.SafeDumper, data: float) -> yaml.Node:
    return dumper.represent_int(int(data)) if data.is_integer() else yaml.SafeDumper.represent_float(dumper, data)


_ConfigDumper.add_representer(list, _represent_list)
_ConfigDumper.add_representer(float, _represent_float)


def load_config(path: str | Path) -> MergeConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError("config", f"file '{path}' not found", "pass the path of a mergekit YAML file")
    return parse_config(path.read_text(encoding="utf-8"))


def parse_config(text: str | dict) -> MergeConfig:
    if isinstance(text, dict):
        raw = text
    else:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise UserError("config", f"not valid YAML{line}", "check indentation and colons") from None
    if not isinstance(raw, dict):
        raise UserError("config", "expected a YAML mapping at the top level", "start from a mergekit slerp example")

    warnings = [f"unknown key '{k}' ignored" for k in raw if k not in KNOWN_KEYS]
    method = raw.get("merge_method")
    if method != "slerp":
        raise UserError("merge_method", f"'{method}' is not supported", "set `merge_method: slerp` (the supported method)")

    slices, models = raw.get("slices"), raw.get("models")
    if (slices is None) == (models is None):
        raise UserError("slices/models", "give exactly one of `slices` or `models`", "list the two parents under one of them")

    base_model = raw.get("base_model")
    if not isinstance(base_model, str) or not base_model:
        raise UserError("base_model", "missing", "set `base_model:` to one of the two parents")
    base_model = str(base_model)

    t_rules = _parse_t(_parameters(raw, "parameters"), "parameters.t", required=True)
    if slices is not None:
        parsed_slices = tuple(_parse_slice(s, i, base_model) for i, s in enumerate(_as_list(slices, "slices")))
        if not parsed_slices:
            raise UserError("slices", "empty", "add a slice with two sources")
        other_models = {s.other.model for s in parsed_slices}
        if len(other_models) != 1 or len({s.base.model for s in parsed_slices}) != 1:
            raise UserError("slices", "every slice must merge the same two models", "use one pair of models in all slices")
        other_model = other_models.pop()
    else:
        names = [_model_name(m, f"models[{i}]") for i, m in enumerate(_as_list(models, "models"))]
        if len(names) != 2:
            raise UserError("models", f"slerp merges exactly two models, got {len(names)}", "list two models")
        other_model = _other_of(names, base_model, "models")
        parsed_slices = None

    return MergeConfig(
        base_model=base_model,
        other_model=other_model,
        t_rules=t_rules,
        slices=parsed_slices,
        dtype=_parse_dtype(raw.get("dtype"), "dtype"),
        out_dtype=_parse_dtype(raw.get("out_dtype"), "out_dtype"),
        tokenizer_source=_optional_str(raw.get("tokenizer_source"), "tokenizer_source"),
        chat_template=_optional_str(raw.get("chat_template"), "chat_template"),
        warnings=tuple(warnings),
    )


def _parse_slice(raw: Any, index: int, base_model: str) -> Slice:
    where = f"slices[{index}]"
    if not isinstance(raw, dict) or "sources" not in raw:
        raise UserError(where, "a slice needs `sources`", "write `- sources: [{model: A, layer_range: [0, N]}, …]`")
    sources = [_parse_source(s, f"{where}.sources[{i}]") for i, s in enumerate(_as_list(raw["sources"], f"{where}.sources"))]
    if len(sources) != 2:
        raise UserError(f"{where}.sources", f"slerp needs exactly two sources, got {len(sources)}", "list two sources")
    other_name = _other_of([s.model for s in sources], base_model, f"{where}.sources")
    # With a model merged with itself both sources share a name: the first is the base.
    base = next(s for s in sources if s.model == base_model)
    other = sources[1] if sources[0] is base else sources[0]
    assert other.model == other_name
    lengths = {None if s.layer_range is None else s.layer_range[1] - s.layer_range[0] for s in sources}
    if len(lengths) != 1:
        raise UserError(f"{where}.sources", "layer_range lengths differ between the sources", "give both sources ranges of equal length")
    t_rules = _parse_t(_parameters(raw, f"{where}.parameters"), f"{where}.parameters.t", required=False)
    return Slice(base=base, other=other, t_rules=t_rules)


def _parse_source(raw: Any, where: str) -> Source:
    model = _model_name(raw, where)
    layer_range = raw.get("layer_range") if isinstance(raw, dict) else None
    if layer_range is None:
        return Source(model)
    if (not isinstance(layer_range, list) or len(layer_range) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in layer_range)):
        raise UserError(f"{where}.layer_range", f"{layer_range!r} is not two integers", "write `layer_range: [start, end]`")
    start, end = layer_range
    if start < 0 or end <= start:
        raise UserError(f"{where}.layer_range", f"[{start}, {end}] is empty or negative", "use 0 <= start < end")
    return Source(model, (start, end))


def _model_name(raw: Any, where: str) -> str:
    model = raw.get("model") if isinstance(raw, dict) else raw
    if not isinstance(model, str) or not model.strip():
        raise UserError(f"{where}.model", "missing model", "give a local path, a Hub id or a .gguf file")
    return model.strip()


def _other_of(names: list[str], base_model: str, where: str) -> str:
    if base_model not in names:
        raise UserError("base_model", f"'{base_model}' is not among the {where} ({', '.join(names)})",
                         "set base_model to one of the listed models")
    rest = list(names)
    rest.remove(base_model)
    return rest[0]


def _parameters(raw: dict, where: str) -> Any:
    params = raw.get("parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise UserError(where, "expected a mapping", "write `parameters: {t: 0.5}`")
    return params.get("t")


def _parse_t(raw: Any, where: str, required: bool) -> tuple[TRule, ...] | None:
    if raw is None:
        if required:
            raise UserError(where, "missing", "set `parameters: {t: 0.5}` (0 keeps base_model, 1 takes the other)")
        return None
    if _is_number(raw):
        return (TRule(validate_gradient([raw], where)),)
    if isinstance(raw, list) and raw and all(_is_number(v) for v in raw):
        return (TRule(validate_gradient(raw, where)),)
    if isinstance(raw, list) and raw and all(isinstance(v, dict) for v in raw):
        rules = []
        for i, entry in enumerate(raw):
            if "value" not in entry:
                raise UserError(f"{where}[{i}].value", "missing", "give a number or a gradient list")
            value = entry["value"]
            values = [value] if not isinstance(value, list) else value
            filt = entry.get("filter")
            if filt is not None and (not isinstance(filt, str) or not filt):
                raise UserError(f"{where}[{i}].filter", f"{filt!r} is not a name fragment", "use e.g. self_attn or mlp")
            rules.append(TRule(validate_gradient(values, f"{where}[{i}].value"), filt))
        return tuple(rules)
    raise UserError(where, f"{raw!r} is not a number, a gradient list or a list of {{filter, value}}",
                     "write e.g. `t: 0.5` or `t: [0, 0.5, 1]`")


def validate_gradient(values: list, where: str) -> tuple[float, ...]:
    if not values:
        raise UserError(where, "empty gradient", "give at least one number between 0 and 1")
    out = []
    for v in values:
        if not _is_number(v) or not math.isfinite(float(v)):
            raise UserError(where, f"{v!r} is not a number", "use numbers between 0 and 1")
        if not 0.0 <= float(v) <= 1.0:
            raise UserError(where, f"{v} is outside [0, 1]", "use numbers between 0 (base_model) and 1 (the other)")
        out.append(float(v))
    return tuple(out)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_dtype(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    name = DTYPE_ALIASES.get(str(raw), str(raw))
    if name not in DTYPES:
        raise UserError(where, f"'{raw}' is not a supported dtype", f"use one of {', '.join(DTYPES)}")
    return name


def _optional_str(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise UserError(where, f"{raw!r} is not a string", "give a model name, 'base', or remove the key")
    return raw


def _as_list(raw: Any, where: str) -> list:
    if not isinstance(raw, list):
        raise UserError(where, "expected a list", "write it as a YAML list (lines starting with '-')")
    return raw


def _slice_to_dict(s: Slice) -> dict[str, Any]:
    def source(src: Source) -> dict[str, Any]:
        d: dict[str, Any] = {"model": src.model}
        if src.layer_range is not None:
            d["layer_range"] = list(src.layer_range)
        return d

    out: dict[str, Any] = {"sources": [source(s.base), source(s.other)]}
    if s.t_rules is not None:
        out["parameters"] = {"t": _t_to_yaml(s.t_rules)}
    return out


def _t_to_yaml(rules: tuple[TRule, ...]) -> Any:
    def value(rule: TRule) -> Any:
        return rule.value[0] if len(rule.value) == 1 else list(rule.value)

    if len(rules) == 1 and rules[0].filter is None:
        return value(rules[0])
    return [({"filter": r.filter} if r.filter is not None else {}) | {"value": value(r)} for r in rules]
