"""Decoding time of `sgpo.rollout.generate_completions` with the buffered key/value cache (the default:
each new position written into one buffer per `generate` call) against `generate`'s own `DynamicCache`
(which concatenates the whole cache at every token), side by side in one run, and whether the two give
the same completions token for token.

The models are random Qwen2s built from configs (no download): the strategy world's base size (hidden
128, 4 layers: what every world run samples with) and `--wide` ones. The prompts are the world's
shape: left-padded, 40–100 tokens (a guided prompt is 73–101); every completion is exactly
`--new-tokens` long (`min_new_tokens`, so sampling luck cannot change the work); sampled at T = 1 in
chunks of `--batch` sequences, as the evaluation samples (batch 128), one thread as every world process.
Each round runs both caches on the same seed, alternating which goes first.

Prints one JSON line per measurement and one summary line per model:

    {"model": ..., "parameters": ..., "plain_s": median, "buffered_s": median, "buffered_vs_plain": median ratio,
     "ratio_min": ..., "ratio_max": ..., "identical": true when every round's completions were equal}

usage: python benchmarks/generate_cache.py [--rounds 3] [--sequences 256] [--batch 128] [--new-tokens 80]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from sgpo.rollout import generate_completions  # noqa: E402
from sgpo.world.model import ModelSpec, build_model  # noqa: E402

MODELS = {
    "world base (hidden 128, 4 layers)": ModelSpec(),
    "world larger (hidden 192, 4 layers)": ModelSpec(hidden_size=192, intermediate_size=528),
}
WIDE = {
    "hidden 512, 8 layers": ModelSpec(
        hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8
    )
}


def word_tokenizer(vocab: int):
    """A word-level tokenizer of `vocab` tokens (w3 … w{vocab-1}), pad 0, EOS 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequences", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=80)
    p.add_argument("--vocab", type=int, default=640)
    p.add_argument("--wide", action="store_true", help="also a hidden-512, 8-layer model (~25 M parameters)")
    args = p.parse_args()
    torch.set_num_threads(1)
    tok = word_tokenizer(args.vocab)
    rng = random.Random(0)
    prompts = [[rng.randrange(3, args.vocab) for _ in range(rng.randint(40, 100))] for _ in range(args.sequences)]
    kwargs = dict(max_new_tokens=args.new_tokens, temperature=1.0, batch_size=args.batch,
                  generation_kwargs={"min_new_tokens": args.new_tokens})  # fmt: skip
    for name, spec in {**MODELS, **(WIDE if args.wide else {})}.items():
        model = build_model(tok, spec)
        params = sum(x.numel() for x in model.parameters())
        times: dict[bool, list[float]] = {False: [], True: []}
        identical = True
        for r in range(args.rounds):
            outs = {}
            for buffered in (False, True) if r % 2 == 0 else (True, False):
                torch.manual_seed(r)
                t = time.perf_counter()
                gen = generate_completions(model, tok, prompts, buffered=buffered, **kwargs)
                times[buffered].append(time.perf_counter() - t)
                outs[buffered] = gen.completion_lists()
                print(json.dumps({"model": name, "round": r, "buffered": buffered, "seconds": round(times[buffered][-1], 3)}))
            identical &= outs[True] == outs[False]
        ratios = [b / a for a, b in zip(times[False], times[True])]
        print(json.dumps({
            "model": name, "parameters": params, "plain_s": round(statistics.median(times[False]), 3),
            "buffered_s": round(statistics.median(times[True]), 3), "buffered_vs_plain": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3), "identical": identical,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
