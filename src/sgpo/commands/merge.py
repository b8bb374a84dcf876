"""`sgpo merge ADAPTER --out DIR`: a LoRA adapter saved by `sgpo train --use_peft true`, merged into its
base model and written as a plain model folder (weights, config, tokenizer, prompt_format.json)."""

from __future__ import annotations

import argparse
import sys

from sgpo.adapters import merge_adapter
from sgpo.commands.common import check_model, error, parse_args
from sgpo.modeling import AdapterError, adapter_base, is_adapter_folder

COMMAND = "merge"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sgpo merge",
        description="Merge a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) into its base "
        "model and save the result as a model folder that loads without PEFT (vLLM, transformers, sgpo eval).",
    )
    p.add_argument("adapter", metavar="ADAPTER", help="adapter folder (the output_dir of a use_peft run, or a checkpoint)")
    p.add_argument("--out", "--output", dest="out", required=True, help="folder to write the merged model to")
    p.add_argument(
        "--base", default=None, help="base model folder or hub id (default: base_model_name_or_path of the adapter config)"
    )
    p.add_argument("--dtype", default="auto", help="dtype to load the base model in: auto (as saved), float32, bfloat16, …")
    return p


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    args = parse_args(build_parser(), argv)
    if not is_adapter_folder(args.adapter):
        return error(COMMAND, f"{args.adapter}: not an adapter folder (no adapter_config.json)", 1)
    try:
        base = args.base or adapter_base(args.adapter)
    except AdapterError as exc:
        return error(COMMAND, str(exc), 1)
    if (code := check_model(COMMAND, base)) is not None:
        return code
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        return error(COMMAND, f"{out}: the folder exists and is not empty", 1)

    import torch

    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype, None)
    if dtype is None:
        return error(COMMAND, f"--dtype {args.dtype}: not a torch dtype")
    merge_adapter(args.adapter, out, base=base, dtype=dtype)
    print(f"sgpo merge: {args.adapter} merged into {base} -> {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
