"""What the Merge tab's form sends with every action (Merge, Plan, Divergence map, t-sweep):
the YAML shown and the eight fields it was built from, read from the page in one place."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from merging.config import MergeConfig
from merging.form import MergeForm, config_to_run, form_from_fields


@dataclass(frozen=True)
class FormRequest:
    yaml_text: str
    form: MergeForm

    def config(self) -> MergeConfig:
        """The config to run: the YAML shown, refused when a field is invalid or the YAML
        lags behind the fields (a click that beat the form's update)."""
        return config_to_run(self.form, self.yaml_text)


@dataclass
class FormControls:
    """The form's components. Handlers get their values as one dict (Gradio's set inputs),
    so no handler lists the fields again."""
    yaml_box: gr.Code
    parent_a: gr.Dropdown
    parent_b: gr.Dropdown
    attn: gr.Textbox
    mlp: gr.Textbox
    default: gr.Textbox
    layer_start: gr.Number
    layer_end: gr.Number
    dtype: gr.Dropdown

    def fields(self) -> list:
        """The eight fields in MergeForm's order (the YAML box is not one of them)."""
        return [self.parent_a, self.parent_b, self.attn, self.mlp, self.default, self.layer_start, self.layer_end, self.dtype]

    def inputs(self, *more) -> set:
        return {self.yaml_box, *self.fields(), *more}

    def form(self, values: dict) -> MergeForm:
        return form_from_fields(*(values[c] for c in self.fields()))

    def request(self, values: dict) -> FormRequest:
        return FormRequest(values[self.yaml_box] or "", self.form(values))
