"""The merge engine: mergekit-compatible SLERP, streamed tensor by tensor."""

from merging.config import MergeConfig, load_config, parse_config
from merging.errors import MergeCancelled, MergeError
from merging.merge import MergeResult, Progress, run_merge

__all__ = ["MergeCancelled", "MergeConfig", "MergeError", "MergeResult", "Progress", "load_config", "parse_config", "run_merge"]
