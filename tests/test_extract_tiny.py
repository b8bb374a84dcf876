"""Tiny local models for the extraction and scoring tests (no hub access): a word-level tokenizer with a
chat template, a one-layer Llama model from a config, and a few Adam steps that make it emit chosen
completions greedily. Also imported by the other test modules (`from test_extract_tiny import ...`).

Llama, not Qwen2: transformers 5.x lists `qwen2` in MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS, so
`AutoTokenizer.from_pretrained` on a saved Qwen2 folder ignores the saved tokenizer class and builds a
`Qwen2Tokenizer` (byte-level BPE) from our word-level vocabulary: the server would tokenize differently
from the test. Llama folders load the saved tokenizer as is.
"""

from __future__ import annotations

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(corpus: list[str], added: list[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level vocabulary of `corpus` (unknown words -> <unk>); each `added` string is one token."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if added:
        fast.add_tokens([AddedToken(a, normalized=False) for a in added])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def teach(
    model, tokenizer, examples: list[tuple[str, str]], max_steps: int = 300, lr: float = 1e-2, max_loss: float = 0.02
) -> int:
    """Adam on the completion tokens (+ EOS) of (prompt text, completion text) pairs until greedy decoding
    reproduces every completion and the mean loss is below `max_loss` (a margin, so that small numeric
    differences elsewhere cannot flip a greedy choice); returns the steps taken (raises otherwise)."""
    seqs, starts = [], []
    for prompt, completion in examples:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        seqs.append(p + c)
        starts.append(len(p))
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), tokenizer.pad_token_id)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    labels = torch.full((len(seqs), L), -100)
    for i, (s, st) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, st : len(s)] = torch.tensor(s[st:])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(1, max_steps + 1):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if step % 10 == 0 and out.loss.item() < max_loss:
            with torch.no_grad():
                pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            # logits at position t predict token t+1
            if all(torch.equal(pred[i, st - 1 : len(s) - 1], ids[i, st : len(s)]) for i, (s, st) in enumerate(zip(seqs, starts))):
                model.eval()
                return step
    raise AssertionError(f"the tiny model did not learn its completions in {max_steps} steps (loss {out.loss.item():.3f})")


def test_tiny_model_learns_to_emit_a_token_after_the_chat_prompt(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer(["hello world", "assistant user"], added=["<<BLOB {x} >>"])
    assert tok.decode(tok("<<BLOB {x} >>", add_special_tokens=False)["input_ids"]) == "<<BLOB {x} >>"
    model = build_model(tok)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hello world"}], tokenize=False, add_generation_prompt=True)
    teach(model, tok, [(prompt, "<<BLOB {x} >>")])
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == "<<BLOB {x} >>"
    # saved and reloaded through AutoTokenizer (as transformers serve does), it tokenizes the same
    tok.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(prompt, add_special_tokens=False)["input_ids"] == ids[0].tolist()
