"""`sgpo demo`: until the strategy world lands, the smallest end-to-end SGPO run (tiny local model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sgpo demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it holds other files")
    parser.add_argument("--quick", action="store_true", help="smallest settings")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"sgpo demo: error: {out} is not empty (use --overwrite)", file=sys.stderr)
        return 2
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    from sgpo.commands.train import main as train_main
    from sgpo.testing import write_tiny_assets

    assets = write_tiny_assets(out / "tiny")
    recipe = Path(__file__).resolve().parents[3] / "recipes" / "tiny_cpu.yaml"
    return train_main(["--config", str(recipe), "--model_name_or_path", str(assets / "model"), "--dataset_name",
                       str(assets / "train.jsonl"), "--output_dir", str(out / "sgpo"), "--report_to", "none"])
