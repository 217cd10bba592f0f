"""Load models in a precision (fp8 / int8 / bf16 / fp32 / auto) and chat with several side by side."""

from inference.cache import ModelCache
from inference.chat import FALLBACK_TEMPLATE, Message, build_prompt
from inference.generation import GenerationSettings, Reply, generate_reply, run_side_by_side, stream_side_by_side
from inference.loading import PRECISIONS, LoadedModel, load_model

__all__ = [
    "FALLBACK_TEMPLATE", "PRECISIONS", "GenerationSettings", "LoadedModel", "Message", "ModelCache", "Reply",
    "build_prompt", "generate_reply", "load_model", "run_side_by_side", "stream_side_by_side",
]
