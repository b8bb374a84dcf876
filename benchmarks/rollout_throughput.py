"""Generated tokens per second of the trainer's rollout stage: Hugging Face `generate` (through
`sgpo.rollout.generate_completions`, as the trainer calls it) vs a colocated vLLM engine
(`sgpo.vllm_engine.ColocatedVLLM`), side by side in one run.

Same random Qwen2 (float32, head_dim 64 — vLLM's CPU attention needs ≥ 32), same prompts, same
sampling (temperature 1, top-k off), every completion exactly NEW_TOKENS long (`min_new_tokens` /
`min_tokens`, so sampling luck cannot change the work). A batch of S sequences is S / N prompts × N
completions each, the trainer's shape: HF gets each prompt repeated N times in one padded `generate`
call, vLLM gets the unique prompts with n = N (sharing their prompt's KV cache, as it does in the
trainer). Each round measures every batch size with both engines, alternating which goes first.

Prints one JSON line per measurement, then one summary line per batch size:

    {"sequences": S, "hf_tokens_per_s": median, "vllm_tokens_per_s": median, "vllm_vs_hf": median ratio,
     "vllm_vs_hf_min": …, "vllm_vs_hf_max": …, "hf_best_tokens_per_s": …, "vllm_best_tokens_per_s": …,
     "best_vs_best": …}

On a machine shared with other jobs the best round of each engine is the least disturbed figure.

usage: python benchmarks/rollout_throughput.py [--sequences 16 128] [--new-tokens 256] [--rounds 3]
       [--layers 4] [--heads 4] [--head-dim 64] [--vocab 8192] [--prompt-tokens 32] [--per-prompt 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import torch  # noqa: E402

from sgpo.rollout import generate_completions  # noqa: E402
from sgpo.testing import build_vllm_tiny_model  # noqa: E402
from sgpo.vllm_engine import ColocatedVLLM, SamplingSettings  # noqa: E402


def word_tokenizer(vocab: int):
    """A word-level tokenizer of `vocab` tokens (w3 … w{vocab-1}), pad 0, EOS 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=int, nargs="+", default=[16, 128])
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--per-prompt", type=int, default=8, help="completions per prompt (the trainer's num_generations)")
    return p.parse_args()


def measure(args: argparse.Namespace, runners: dict, T: int) -> dict[tuple[str, int], list[float]]:
    """Tokens per second of each backend at each size, rounds in alternating order (one JSON line each)."""
    rates: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for S in args.sequences:
            order = ("hf", "vllm") if r % 2 == 0 else ("vllm", "hf")
            for name in order:
                t0 = time.perf_counter()
                tokens = runners[name](S)
                s = time.perf_counter() - t0
                assert tokens == S * T, f"{name} generated {tokens} tokens, expected {S * T}"
                rates.setdefault((name, S), []).append(tokens / s)
                print(
                    json.dumps(
                        {
                            "round": r,
                            "backend": name,
                            "sequences": S,
                            "tokens": tokens,
                            "seconds": round(s, 3),
                            "tokens_per_s": round(tokens / s, 1),
                        }
                    ),
                    flush=True,
                )
    return rates


def report(args: argparse.Namespace, rates: dict[tuple[str, int], list[float]]) -> None:
    """One JSON line per size: median tokens/s of each backend and their ratio."""
    for S in args.sequences:
        hf, vl = rates[("hf", S)], rates[("vllm", S)]
        ratios = [v / h for v, h in zip(vl, hf)]
        print(
            json.dumps(
                {
                    "sequences": S,
                    "hf_tokens_per_s": round(statistics.median(hf), 1),
                    "vllm_tokens_per_s": round(statistics.median(vl), 1),
                    "vllm_vs_hf": round(statistics.median(ratios), 2),
                    "vllm_vs_hf_min": round(min(ratios), 2),
                    "vllm_vs_hf_max": round(max(ratios), 2),
                    "hf_best_tokens_per_s": round(max(hf), 1),
                    "vllm_best_tokens_per_s": round(max(vl), 1),
                    "best_vs_best": round(max(vl) / max(hf), 2),
                }
            ),
            flush=True,
        )


def main() -> None:
    args = parse_args()

    tok = word_tokenizer(args.vocab)
    torch.manual_seed(0)
    model = build_vllm_tiny_model(
        tok,
        layers=args.layers,
        head_dim=args.head_dim,
        heads=args.heads,
        max_position_embeddings=args.prompt_tokens + args.new_tokens + 16,
    ).eval()
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    max_prompts = max(args.sequences) // args.per_prompt
    prompts = [torch.randint(3, args.vocab, (args.prompt_tokens,), generator=g).tolist() for _ in range(max_prompts)]
    eos = (tok.eos_token_id,)
    T = args.new_tokens
    sampling = SamplingSettings(max_tokens=T, temperature=1.0, min_tokens=T, stop_token_ids=eos)

    t0 = time.perf_counter()
    engine = ColocatedVLLM(model, tok, sampling)
    start_s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "model_parameters": params,
                "layers": args.layers,
                "hidden": args.heads * args.head_dim,
                "vocab": args.vocab,
                "prompt_tokens": args.prompt_tokens,
                "new_tokens": T,
                "per_prompt": args.per_prompt,
                "vllm_engine_start_s": round(start_s, 2),
                "torch_threads": torch.get_num_threads(),
            }
        ),
        flush=True,
    )

    def run_hf(S: int) -> int:
        batch = [q for q in prompts[: S // args.per_prompt] for _ in range(args.per_prompt)]
        gen = generate_completions(
            model, tok, batch, max_new_tokens=T, temperature=1.0, top_k=0, generation_kwargs={"min_new_tokens": T}
        )
        return int(gen.completion_mask.sum())

    def run_vllm(S: int) -> int:
        gen = engine.generate(prompts[: S // args.per_prompt], n=args.per_prompt)
        return int(gen.completion_mask.sum())

    runners = {"hf": run_hf, "vllm": run_vllm}
    run_vllm(min(args.sequences))  # warm-up (first-call set-up of either engine)
    run_hf(min(args.sequences))
    report(args, measure(args, runners, T))
    engine.close()


if __name__ == "__main__":
    main()
