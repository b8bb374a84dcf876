"""Which checkpoint a run resumes from (torch-free: `sgpo train` checks it before anything loads).

`SGPOTrainer` writes each checkpoint into `OUTPUT_DIR/.partial-checkpoints/checkpoint-N` and renames
it to `OUTPUT_DIR/checkpoint-N` once every process has written its part, so a run killed while
saving leaves the earlier checkpoints usable and never a half-written `checkpoint-N`.
`last_complete_checkpoint` is what `--resume_from_checkpoint true` / `last` means.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

STAGING_DIR = ".partial-checkpoints"  # a checkpoint is written here, then renamed into place whole
COMPLETE_MARKER = "trainer_state.json"  # the last file Hugging Face's Trainer writes into a checkpoint
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-N` folder of `output_dir` that is complete (holds `trainer_state.json`),
    or None. Newer incomplete ones (a copy cut short, a checkpoint of another tool killed while it was
    written) are skipped with a warning."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name)))
    for _, folder in reversed(found):
        if (folder / COMPLETE_MARKER).is_file():
            return str(folder)
        logger.warning("%s is incomplete (no %s): skipped", folder, COMPLETE_MARKER)
    return None
