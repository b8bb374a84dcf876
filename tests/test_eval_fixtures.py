"""Tiny local models and tokenizer for the evaluation tests (no hub access).

- a byte-level BPE tokenizer trained here on a few sentences, with a ChatML chat template;
- an "oracle" Qwen2 whose transformer blocks output zero, so the next token depends only on the
  current one, with its LM head set so that greedy decoding after any prompt writes
  `The answer is \\boxed{4}` and stops: its accuracy on a benchmark is known exactly;
- a randomly initialised Qwen2 (attention on), for the per-token KL of the selectivity view.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ORACLE_TEXT = "The answer is \\boxed{4}"
CORPUS = [
    "What is 2+2? What is 1+3? What is 2+3? Add the two numbers.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "A strategy that solves problems of this kind: add the numbers, then check the sum.",
    "method : running maximum . 3 > 3 , 7 > 7 , 1 > 7 . answer : \\boxed{7}",
    ORACLE_TEXT,
    "user assistant system",
] * 3


def build_tokenizer(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def _config(vocab_size: int, **kw):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        **kw,
    )


def build_oracle_model(path: Path, tokenizer) -> None:
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(_config(len(tokenizer)))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    last = tokenizer(prompt, add_special_tokens=False)["input_ids"][-1]
    answer = tokenizer(ORACLE_TEXT, add_special_tokens=False)["input_ids"]
    chain = [last] + answer + [tokenizer.eos_token_id]
    assert len(set(chain[:-1])) == len(chain) - 1, "the oracle's chain needs distinct tokens"
    with torch.no_grad():
        for layer in model.model.layers:  # blocks add nothing to the residual stream
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = torch.randn(len(tokenizer), 64)
        model.model.embed_tokens.weight.copy_(emb)
        head = torch.zeros(len(tokenizer), 64)
        for a, b in zip(chain[:-1], chain[1:]):  # after token a, token b gets logit 20·√64 = 160
            head[b] += 20 * emb[a] / emb[a].norm()
        model.lm_head.weight.copy_(head)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def build_random_model(path: Path, tokenizer) -> None:
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(1)
    model = Qwen2ForCausalLM(_config(len(tokenizer), initializer_range=0.3))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{'tokenizer': dir, 'oracle': dir, 'random': dir}. Built once per test session: each module that
    imports this fixture gets its own instance, so the folders are shared through the session's
    base temporary directory."""
    root = tmp_path_factory.getbasetemp() / "sgpo_tiny_models"
    paths = {"tokenizer": root / "tokenizer", "oracle": root / "oracle", "random": root / "random"}
    if not (root / "complete").exists():
        tok = build_tokenizer(paths["tokenizer"])
        build_oracle_model(paths["oracle"], tok)
        build_random_model(paths["random"], tok)
        (root / "complete").touch()
    return paths


def test_oracle_model_writes_its_answer(tiny_models):
    """The fixture itself: greedy decoding after a chat prompt gives exactly ORACLE_TEXT, then EOS."""
    from transformers import AutoModelForCausalLM

    from sgpo.modeling import load_tokenizer
    from sgpo.rollout import generate_completions

    tok = load_tokenizer(tiny_models["oracle"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["oracle"])
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True)
    gen = generate_completions(model, tok, [tok(prompt, add_special_tokens=False)["input_ids"]], max_new_tokens=20, temperature=0)
    assert gen.texts == [ORACLE_TEXT]
    assert int(gen.completion_ids[0, int(gen.completion_lengths[0]) - 1]) == tok.eos_token_id
