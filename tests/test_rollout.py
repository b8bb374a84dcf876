"""`sgpo.rollout.generate_completions`: sampling settings reach `generate` as the caller gave them."""

import torch
from transformers import GenerationConfig

from sgpo.rollout import generate_completions


def near_uniform_model(tiny_model, model_defaults: dict):
    # a tiny random LM head: the next-token distribution is close to uniform over the 148-token
    # vocabulary but has no ties, so the number of distinct tokens in a sample tells whether it was
    # truncated to the top k
    with torch.no_grad():
        tiny_model.lm_head.weight.normal_(0.0, 1e-3)
    tiny_model.generation_config = GenerationConfig(
        eos_token_id=tiny_model.generation_config.eos_token_id, pad_token_id=0, **model_defaults
    )
    return tiny_model


def sampled_tokens(model, tokenizer, **kw) -> set[int]:
    torch.manual_seed(0)
    prompts = [tokenizer("what is 1 plus 2", add_special_tokens=False)["input_ids"]] * 256  # one position, 256 draws
    gen = generate_completions(model, tokenizer, prompts, max_new_tokens=1, generation_kwargs={"min_new_tokens": 1}, **kw)
    return set(gen.completion_ids[gen.completion_mask.bool()].tolist())


def test_top_k_zero_samples_the_full_distribution_whatever_the_model_defaults(tokenizer, tiny_model):
    # a checkpoint's generation_config.json (Qwen2.5-Instruct ships top_k=20) and transformers 5's own
    # default (top_k=50) must not truncate the sampling distribution the trainer scores in full:
    # 256 near-uniform draws over 147 non-EOS tokens (EOS suppressed by min_new_tokens) show
    # 147·(1 − (146/147)^256) ≈ 121 distinct tokens on average; top-5 sampling can show at most 5
    model = near_uniform_model(tiny_model, dict(do_sample=True, top_k=5, top_p=0.5, temperature=0.3))
    assert len(sampled_tokens(model, tokenizer, temperature=1.0, top_k=0, top_p=1.0)) > 60
    assert len(sampled_tokens(model, tokenizer, temperature=1.0, top_k=5)) <= 5  # an explicit top_k applies


def test_outputs_are_ordinary_tensors(tokenizer, tiny_model):
    # decoding runs in inference mode; what it returns must be usable in a later autograd pass
    gen = generate_completions(tiny_model, tokenizer, [[5, 6, 7]] * 2, max_new_tokens=3, temperature=1.0)
    for t in (gen.prompt_ids, gen.prompt_mask, gen.completion_ids, gen.completion_mask):
        assert not t.is_inference()
    out = tiny_model(input_ids=torch.cat([gen.prompt_ids, gen.completion_ids], 1)).logits.sum()
    out.backward()
