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


def prompts_of_several_lengths(tokenizer) -> list[list[int]]:
    texts = ["what is 1 plus 2", "what is 12 plus 7 and then 3", "add 4", "what is 2 plus 2 plus 2 plus 2 plus 2"]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] * 3


def test_the_buffered_cache_gives_generates_own_completions(tokenizer, tiny_model):
    """The buffered key/value cache (written in place, not concatenated) is a speed-up only: greedy and
    sampled completions of left-padded prompts of several lengths, in chunks, equal those of
    `generate`'s own cache token for token."""
    prompts = prompts_of_several_lengths(tokenizer)
    for temperature in (0.0, 1.0):
        out = {}
        for buffered in (False, True):
            torch.manual_seed(3)
            gen = generate_completions(
                tiny_model, tokenizer, prompts, max_new_tokens=24, temperature=temperature, batch_size=5, buffered=buffered
            )
            out[buffered] = gen.completion_lists()
        assert out[True] == out[False] and max(map(len, out[True])) > 10


def test_the_buffered_cache_is_the_one_generate_uses(tokenizer, tiny_model, monkeypatch):
    """The test above would pass if no buffered cache were built: here the buffered layers must take
    every update, and their keys stay views of the one buffer (no copy per token)."""
    import sgpo.rollout as rollout

    layer_class = rollout._buffered_layer_class()
    seen = []
    update = layer_class.update

    def spy(self, key_states, value_states, *args, **kwargs):
        keys, values = update(self, key_states, value_states, *args, **kwargs)
        seen.append(keys.data_ptr() == self._buffers[0].data_ptr())
        return keys, values

    monkeypatch.setattr(layer_class, "update", spy)
    generate_completions(tiny_model, tokenizer, prompts_of_several_lengths(tokenizer), max_new_tokens=8, temperature=1.0)
    n_layers = tiny_model.config.num_hidden_layers
    assert len(seen) >= 2 * n_layers and all(seen)


def test_the_buffered_cache_grows_and_follows_beam_reordering(tokenizer, tiny_model):
    """A capacity too small for the sequence (the buffer is regrown), and beam search (which reorders
    the cache by replacing its tensors, so the buffer is rebuilt from them): the same outputs as
    `generate`'s own cache."""
    from sgpo.rollout import buffered_cache

    ids = torch.tensor([prompts_of_several_lengths(tokenizer)[0]] * 2)
    for kw in (dict(do_sample=False), dict(do_sample=False, num_beams=3, num_return_sequences=2)):
        config = GenerationConfig(max_new_tokens=16, min_new_tokens=16, pad_token_id=0, **kw)
        plain = tiny_model.generate(input_ids=ids, generation_config=config)
        cache = buffered_cache(tiny_model, config, capacity=3)
        assert cache is not None
        buffered = tiny_model.generate(input_ids=ids, generation_config=config, past_key_values=cache)
        assert torch.equal(plain, buffered)
