"""The merge form of the app as data: presets, form values <-> MergeConfig, t curves.

Kept here (not in app.py) so that the YAML <-> form round trip is tested without a UI.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError
from merging.config import MergeConfig, Slice, Source, TRule, parse_config, validate_gradient
from merging.planning import t_curve

FILTERS = ("self_attn", "mlp")  # the per-filter curves the form edits; the third is the default
PRESETS: dict[str, tuple[str, str, str]] = {  # (self_attn, mlp, default)
    "constant 0.5": ("0.5", "0.5", "0.5"),
    "V-shape": ("0, 0.5, 1, 0.5, 0", "0, 0.5, 1, 0.5, 0", "0, 0.5, 1, 0.5, 0"),
    "LazyMergekit": ("0, 0.5, 0.3, 0.7, 1", "1, 0.5, 0.7, 0.3, 0", "0.5"),
}
CUSTOM = "custom"  # the preset control's name for gradients that match no preset
# What the YAML box holds while a form field is invalid: a comment, so no stale config is shown.
INVALID_YAML = "# invalid: "


@dataclass(frozen=True)
class MergeForm:
    base_model: str
    other_model: str
    self_attn: str = "0.5"
    mlp: str = "0.5"
    default: str = "0.5"
    layer_start: float | None = 0  # as typed (None: emptied); config_from_form checks it is a layer index
    layer_end: float | None = 0  # 0: all layers (the `models:` form)
    dtype: str = "bfloat16"


def form_from_fields(a: str | None, b: str | None, attn: str | None, mlp: str | None, default: str | None,
                     start: float | None, end: float | None, dtype: str) -> MergeForm:
    """The form from the page's eight fields as Gradio sends them (an emptied one is None)."""
    return MergeForm(a or "", b or "", attn or "", mlp or "", default or "", start, end, dtype)


def layer_index(value: float | None, field: str) -> int:
    """A layer field's value, refused unless a whole number of 0 or more (2.5 is not
    rounded to 2 behind the visitor's back)."""
    if value is None or value < 0 or value != int(value):
        shown = "empty" if value is None else f"{value:g}"
        raise UserError(field, f"{shown} is not a layer number", "type a whole number of 0 or more, such as 0")
    return int(value)


def parse_gradient(text: str, field: str) -> tuple[float, ...]:
    parts = [p for p in text.replace("[", " ").replace("]", " ").replace(",", " ").split() if p]
    values = []
    for p in parts:
        try:
            values.append(float(p))
        except ValueError:
            raise UserError(field, f"'{p}' is not a number", "write numbers between 0 and 1, e.g. 0, 0.5, 1") from None
    return validate_gradient(values, field)


def format_gradient(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def config_from_form(form: MergeForm) -> MergeConfig:
    if not form.base_model.strip() or not form.other_model.strip():
        raise UserError("parents", "choose both parent A and parent B", "pick from the list or type a Hub id / path")
    rules = (
        TRule(parse_gradient(form.self_attn, "t (self_attn)"), "self_attn"),
        TRule(parse_gradient(form.mlp, "t (mlp)"), "mlp"),
        TRule(parse_gradient(form.default, "t (everything else)")),
    )
    slices = None
    start, end = layer_index(form.layer_start, "first layer"), layer_index(form.layer_end, "end layer")
    if start and not end:
        raise UserError("layer range", f"first layer {start} with end layer 0 (all layers)", "set the end layer, or first layer 0")
    if end:
        if not start < end:
            raise UserError("layer range", f"[{start}, {end}] is empty", "use start < end, or end 0 for all layers")
        span = (start, end)
        slices = (Slice(Source(form.base_model, span), Source(form.other_model, span)),)
    return MergeConfig(form.base_model.strip(), form.other_model.strip(), rules, slices, dtype=form.dtype)


def form_from_yaml(text: str) -> MergeForm:
    """Fill the form from a pasted config. Rules with other filters are not representable
    in the form and are refused rather than silently dropped."""
    config = parse_config(text)
    by_filter: dict[str | None, tuple[float, ...]] = {}
    for rule in config.t_rules:
        if rule.filter not in (*FILTERS, None):
            raise UserError("parameters.t", f"filter '{rule.filter}' has no field in the form",
                             "merge it from the CLI (python -m merging) or use self_attn / mlp / default")
        by_filter.setdefault(rule.filter, rule.value)
    default = by_filter.get(None, (0.5,))
    span = config.slices[0].base.layer_range if config.slices and len(config.slices) == 1 else None
    return MergeForm(config.base_model, config.other_model, format_gradient(by_filter.get("self_attn", default)),
                     format_gradient(by_filter.get("mlp", default)), format_gradient(default),
                     span[0] if span else 0, span[1] if span else 0, config.dtype or "bfloat16")


def preset_of(form: MergeForm) -> str:
    """The preset whose three gradients the form holds (however they are spelled), or CUSTOM."""
    def gradients(texts: tuple[str, str, str]) -> tuple[tuple[float, ...], ...] | None:
        try:
            return tuple(parse_gradient(text, "t") for text in texts)
        except UserError:
            return None

    current = gradients((form.self_attn, form.mlp, form.default))
    return next((name for name, texts in PRESETS.items() if current is not None and gradients(texts) == current), CUSTOM)


def config_to_run(form: MergeForm, yaml_text: str) -> MergeConfig:
    """The config a Merge / Plan / Divergence click runs: the YAML shown, byte for byte, and
    only when the form is valid and says the same thing (a form edit whose YAML has not
    arrived yet, or a field still invalid, refuses with that field's message)."""
    config_from_form(form)  # the form's own error first: "t (default): 1.5 is outside [0, 1] — …"
    if yaml_text.startswith(INVALID_YAML) or _canonical(form_from_yaml(yaml_text)) != _canonical(form):
        raise UserError("form", "the YAML box does not show the form's values yet", "wait a moment, then press the button again")
    return parse_config(yaml_text)


def _canonical(form: MergeForm) -> MergeForm:
    def gradient(text: str) -> str:
        return format_gradient(parse_gradient(text, "t"))

    return MergeForm(form.base_model.strip(), form.other_model.strip(), gradient(form.self_attn), gradient(form.mlp),
                     gradient(form.default), int(form.layer_start or 0), int(form.layer_end or 0), form.dtype)


def t_curves(config: MergeConfig, num_layers: int) -> dict[str, list[float]]:
    """t per layer for each curve the form shows (the first filter that matches wins)."""
    names = {"self_attn": "model.layers.0.self_attn.q_proj.weight", "mlp": "model.layers.0.mlp.up_proj.weight",
             "everything else": "model.layers.0.input_layernorm.weight"}
    return {label: t_curve(config.t_rules, name, num_layers) for label, name in names.items()}
