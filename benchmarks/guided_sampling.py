"""What sampling SGPO's guided prompts costs with Hugging Face `generate`, side by side in one process.

The step-time benchmark's equal-rollout column (benchmarks/step_time.py: SGPO with 4 autonomous + 4
guided completions per problem against GRPO with 8 autonomous) spends its excess over GRPO in
sampling. This measures why, on the same tiny Qwen2 (hidden 128, 4 layers, 4 query heads sharing 2
key/value heads, as Qwen2 does) and the same 32 rows of 48 completion tokens, through the trainer's
own sampling function (`sgpo.rollout.generate_completions`):

- short: 32 prompts of 8 tokens (GRPO's batch: every row the problem alone, no padding);
- mixed: 16 of 8 tokens and 16 of 41 (SGPO's batch: the guided rows carry the strategy, and one
  padded call pays for the longest prompt on every row);
- long: 32 prompts of 41 tokens (the same lengths as mixed's longest, without padding);
- with --masked-gqa, the same three again with transformers' SDPA told to keep grouped-query
  attention when an attention mask is present (a probe, not something sgpo does: transformers
  repeats the key/value heads into a copy whenever a mask is given, i.e. whenever prompts are padded).

Each figure is the median over --repeats calls; the last line is JSON with the times and the ratios
mixed/short and long/short. With --profile, the five operators with the most self CPU time of one
mixed call.

usage: python benchmarks/guided_sampling.py [--repeats 7] [--masked-gqa] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from sgpo.rollout import generate_completions  # noqa: E402
from sgpo.testing import build_tiny_model, build_tiny_tokenizer  # noqa: E402

ROWS, SHORT, LONG, MAX_LEN, HIDDEN, LAYERS = 32, 8, 41, 48, 128, 4


def batches() -> dict[str, list[list[int]]]:
    short, long_ = list(range(5, 5 + SHORT)), list(range(5, 5 + LONG))
    half = ROWS // 2
    return {"short": [short] * ROWS, "mixed": [short] * half + [long_] * half, "long": [long_] * ROWS}


def timed(model, tok, prompts: list[list[int]], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        generate_completions(model, tok, prompts, max_new_tokens=MAX_LEN, generation_kwargs={"min_new_tokens": MAX_LEN})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(model, tok, repeats: int) -> dict[str, float]:
    generate_completions(model, tok, batches()["mixed"], max_new_tokens=MAX_LEN)  # warm-up call
    out = {name: round(timed(model, tok, prompts, repeats), 4) for name, prompts in batches().items()}
    out["mixed_over_short"] = round(out["mixed"] / out["short"], 3)
    out["long_over_short"] = round(out["long"] / out["short"], 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7, help="calls per batch; the figure is their median")
    p.add_argument("--masked-gqa", action="store_true", help="also measure with grouped-query attention kept under a mask")
    p.add_argument("--profile", action="store_true", help="print the top operators of one mixed call")
    a = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.manual_seed(0)
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, hidden_size=HIDDEN, layers=LAYERS)
    result: dict = {"load_avg_1m": [round(os.getloadavg()[0], 2)], "stock": measure(model, tok, a.repeats)}
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            generate_completions(
                model, tok, batches()["mixed"], max_new_tokens=MAX_LEN, generation_kwargs={"min_new_tokens": MAX_LEN}
            )
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=5))
    if a.masked_gqa:
        import transformers.integrations.sdpa_attention as sdpa

        stock = sdpa.use_gqa_in_sdpa
        sdpa.use_gqa_in_sdpa = lambda attention_mask, key, value: key.shape[-1] == value.shape[-1] <= 256
        try:
            result["masked_gqa"] = measure(model, tok, a.repeats)
        finally:
            sdpa.use_gqa_in_sdpa = stock
    result["load_avg_1m"].append(round(os.getloadavg()[0], 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
