"""Tiny, locally built assets for smoke tests and CPU recipes (no downloads).

`build_tiny_tokenizer()` is a word-level tokenizer with a chat template; `build_tiny_model()` a
random Qwen2 of a few thousand parameters (`build_vllm_tiny_model()`: one whose head dimension vLLM's
CPU attention runs); `tiny_arithmetic_rows()` problems in the data format.
`warm_up_tiny_model()` gives the random model a few seconds of supervised warm-up so that a first
training run shows every part of the method moving (see its docstring).

    python -m sgpo.testing DIR

writes the warmed model + tokenizer to DIR/model and the problems to DIR/train.jsonl, for
`sgpo train --config recipes/tiny_cpu.yaml` (`--help` lists the options).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sgpo.data import write_rows
from sgpo.prompts import PromptFormat
from sgpo.sft import Example, completion_nll

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)
_WORDS = (
    "<system> <user> <assistant> </s> what is plus minus times the answer strategy add subtract numbers first second "
    "then write result as please reason step by step and put your final within a . , : ; \\boxed{ } { } = "
    "following solves problems of this kind"
).split()


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for w in _WORDS + [str(d) for d in range(100)]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(tokenizer, hidden_size: int = 32, layers: int = 2, seed: int = 0, tie_word_embeddings: bool = False):
    return _tiny_qwen2(tokenizer, hidden_size, layers, 4, 2, 512, seed, tie_word_embeddings)


def build_vllm_tiny_model(
    tokenizer,
    layers: int = 2,
    head_dim: int = 32,
    heads: int = 2,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    max_position_embeddings: int = 512,
):
    """A random Qwen2 that vLLM's CPU attention can run: head_dim ≥ 32 (32, 64, 80, …), hidden size
    heads × head_dim, one key/value head per two query heads (grouped-query attention, as Qwen2)."""
    return _tiny_qwen2(
        tokenizer, heads * head_dim, layers, heads, max(1, heads // 2), max_position_embeddings, seed, tie_word_embeddings
    )


def _tiny_qwen2(tokenizer, hidden_size, layers, heads, kv_heads, max_positions, seed, tie_word_embeddings):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def tiny_arithmetic_rows(n: int = 16, with_strategy_every: int = 1) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = (i * 7) % 10, (i * 3 + 1) % 10
        rows.append(
            {
                "id": f"add-{i}",
                "problem": f"what is {a} plus {b}",
                "answer": str(a + b),
                "strategy": "add the first and second numbers then write the result" if i % with_strategy_every == 0 else None,
            }
        )
    return rows


def tiny_warmup_examples(rows: Sequence[dict]) -> list[tuple[dict, str]]:
    """(row to prompt, target completion) pairs of the tiny warm-up.

    Guided (the row's strategy in the prompt): the right answer, `\\boxed{ a+b }`. Autonomous (no
    strategy): three targets per problem, equally often — the right answer, a wrong one
    (`\\boxed{ |a−b| }`) and a ramble longer than the recipe's `max_completion_length`, which is
    truncated. Rows without a strategy get the autonomous targets only."""
    out: list[tuple[dict, str]] = []
    for row in rows:
        a, b = (int(w) for w in row["problem"].split() if w.isdigit())
        right, wrong = f"\\boxed{{ {a + b} }}", f"\\boxed{{ {abs(a - b)} }}"
        ramble = "first add the numbers then add the numbers then add the numbers"
        if row.get("strategy"):
            out.append((row, right))
        out += [({**row, "strategy": None}, target) for target in (right, wrong, ramble)]
    return out


def warm_up_tiny_model(model, tokenizer, rows: Sequence[dict], *, steps: int = 100, learning_rate: float = 1e-2, seed: int = 0):
    """A few seconds of supervised warm-up (full-batch AdamW on `tiny_warmup_examples`, loss on the
    completion tokens; the trainer's default prompt format), in place; returns `model`.

    A random tiny model scores 0 on every rollout, so a first run logs zero reward, zero loss, zero
    instance weight and no distillation KL. After this warm-up (sampling at temperature 1), a guided
    prompt is answered right almost always and an autonomous one about a third of the time, a third
    of the autonomous completions are truncated, so rewards, RL advantages, instance weights (guided
    − autonomous accuracy) and the distillation KL are all nonzero from the first step.
    """
    import torch

    fmt = PromptFormat()
    pairs = tiny_warmup_examples(rows)
    prompts = tokenizer([fmt.render(tokenizer, r["problem"], r["strategy"]) for r, _ in pairs], add_special_tokens=False)[
        "input_ids"
    ]
    targets = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    examples = [Example(list(p), list(t) + [tokenizer.eos_token_id]) for p, t in zip(prompts, targets)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread, and 1 thread never oversubscribes a busy machine
    try:
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=learning_rate)
        model.train()
        for _ in range(steps):
            nll, count = completion_nll(model, examples, tokenizer.pad_token_id)
            opt.zero_grad()
            (nll / count).backward()
            opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    return model


def write_tiny_assets(folder: str | Path, n: int = 16, warm_up: bool = True, seed: int = 0) -> Path:
    """The tiny model (warmed up unless `warm_up=False`) and tokenizer in `folder/model`, `n`
    problems in `folder/train.jsonl`; returns `folder`."""

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    model = build_vllm_tiny_model(tokenizer, seed=seed)  # head_dim 32: the recipe also runs with use_vllm
    rows = tiny_arithmetic_rows(n)
    if warm_up:
        warm_up_tiny_model(model, tokenizer, rows, seed=seed)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    write_rows(folder / "train.jsonl", rows)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sgpo.testing",
        description="Write a tiny local model + tokenizer (DIR/model) and arithmetic problems with strategies "
        "(DIR/train.jsonl) for `sgpo train --config recipes/tiny_cpu.yaml`; no downloads, a few seconds on CPU.",
    )
    parser.add_argument("folder", nargs="?", default="runs/tiny", metavar="DIR", help="output folder (default: runs/tiny)")
    parser.add_argument("--n", type=int, default=16, help="number of problems (default: 16)")
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="save the random model as built (every rollout then scores 0: nothing moves in training)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and its warm-up (default: 0)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    print(write_tiny_assets(args.folder, args.n, warm_up=not args.no_warm_up, seed=args.seed))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
