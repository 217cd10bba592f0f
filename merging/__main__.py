"""CLI: python -m merging CONFIG.yml OUTPUT_DIR [--shard-size 2GB] [--max-ram 128MB] [--overwrite] [--dry-run] [--device cpu|cuda]
[--allow-non-finite]"""

from __future__ import annotations

import argparse
import sys
import threading

from core.errors import UserError
from merging.config import load_config
from merging.feed import DEFAULT_MAX_RAM, parse_max_ram
from merging.merge import DEFAULT_SHARD_BYTES, Progress, run_merge
from merging.sizes import parse_size


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["analyze"]:
        return analyze(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m merging", description="SLERP-merge two models from a mergekit YAML config. "
                                     "`python -m merging analyze A B` prints the angle between two models per tensor.")
    parser.add_argument("config", help="mergekit YAML (merge_method: slerp)")
    parser.add_argument("output_dir", help="folder to create with the merged model (with --dry-run: where the disk is counted)")
    parser.add_argument("--shard-size", default=f"{DEFAULT_SHARD_BYTES // 10**9}GB", help="max bytes per safetensors shard (default 2GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--max-ram", default=f"{DEFAULT_MAX_RAM // 10**6}MB",
                        help=f"RAM the merge may use beside the process itself (default {DEFAULT_MAX_RAM // 10**6}MB): "
                             "tensors whose pair fits are read once, larger ones partly twice; peak RAM stays flat in model size")
    parser.add_argument("--dry-run", action="store_true", help="print size, peak RAM, disk and time estimates; write nothing")
    parser.add_argument("--allow-non-finite", action="store_true",
                        help="merge parents holding NaN or Inf (refused otherwise); the model card lists those tensors")
    parser.add_argument("--device", default="cpu", help="where the SLERP math runs: cpu (default) or cuda (same tensors within 1 bf16 ulp)")
    args = parser.parse_args(argv)
    if args.dry_run:
        return plan_only(args.config, args.max_ram, args.output_dir)

    from tqdm import tqdm

    cancel = threading.Event()
    bar = tqdm(total=0, unit="B", unit_scale=True, desc="merging", disable=None)

    def on_progress(p: Progress) -> None:
        bar.total = p.bytes_total
        bar.set_postfix_str(p.line(), refresh=False)
        bar.update(p.bytes_written - bar.n)

    try:
        shard_bytes = parse_size(args.shard_size, "--shard-size", "2GB, 500MB or 1GiB")  # cheap checks first
        max_ram = parse_max_ram(args.max_ram)
        result = run_merge(load_config(args.config), args.output_dir, shard_bytes=shard_bytes, overwrite=args.overwrite,
                           on_progress=on_progress, cancel=cancel, device=args.device, max_ram=max_ram,
                           allow_non_finite=args.allow_non_finite)
    except UserError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        print("error: merge: interrupted — nothing was written; run it again", file=sys.stderr)
        return 130
    bar.close()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"merged into {result.output_dir}: {result.summary()}")
    return 0


def plan_only(config_path: str, max_ram: str, output_dir: str) -> int:
    from pathlib import Path

    from merging.dry_run import dry_run

    try:
        print(dry_run(load_config(config_path), parse_max_ram(max_ram), Path(output_dir).expanduser().absolute().parent).describe())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def analyze(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m merging analyze", description="Angle θ between two models, per tensor.")
    parser.add_argument("model_a")
    parser.add_argument("model_b")
    args = parser.parse_args(argv)
    from core.sources import resolve_model
    from merging.analyze import divergence
    from merging.checkpoint import open_checkpoint

    try:
        a = open_checkpoint(args.model_a, resolve_model(args.model_a))
        b = open_checkpoint(args.model_b, resolve_model(args.model_b))
        angles = divergence(a, b)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    width = max(len(x.name) for x in angles)
    print(f"{'tensor':<{width}}  layer  theta_deg")
    for x in angles:
        print(f"{x.name:<{width}}  {'-' if x.layer is None else x.layer:>5}  {x.theta_degrees:9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
