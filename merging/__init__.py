"""The merge engine: mergekit-compatible SLERP, streamed tensor by tensor."""

from merging.config import MergeConfig, load_config, parse_config
from merging.merge import MergeCancelled, MergeResult, Progress, run_merge

__all__ = ["MergeCancelled", "MergeConfig", "MergeResult", "Progress", "load_config", "parse_config", "run_merge"]
