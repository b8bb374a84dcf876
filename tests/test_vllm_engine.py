"""The colocated vLLM generator on CPU, for real (no mock): an in-process engine started from a tiny
Qwen2 built here (head_dim 32, which vLLM's CPU attention runs), through `make_vllm_generator` and an
`SGPOConfig`, once with an untied and once with a tied LM head (one engine each; the module's tests
run against both).

What is checked: vLLM samples from the distribution the trainer scores (its sampled-token log-probs
equal the trainer's, taken from the HF model at the same temperature ≠ 1); top-k truncates as asked
and top-k 0 does not; completions end at the first stop token and keep it, like the HF path; after
the HF weights change (an optimizer step) and `load_weights`, generation follows the new weights —
and before it, it visibly does not (the stale-weights failure this guards against).
"""

import pytest
import torch

from conftest import require_vllm

require_vllm()

from sgpo.config import SGPOConfig  # noqa: E402
from sgpo.objectives import sampled_logps  # noqa: E402
from sgpo.rollout import Generation, completion_mask_from_ids, eos_ids  # noqa: E402
from sgpo.testing import build_vllm_tiny_model  # noqa: E402
from sgpo.vllm_engine import ColocatedVLLM, SamplingSettings, make_vllm_generator  # noqa: E402

TEMPERATURE = 0.7
MAX_TOKENS = 12
PROMPTS = ["what is 3 plus 4", "what is 7 minus 2 please", "add the first and second numbers", "the answer is"]


@pytest.fixture(scope="module", params=["untied", "tied"])
def tied(request) -> bool:
    return request.param == "tied"


@pytest.fixture(scope="module")
def engine(tied, tokenizer, tmp_path_factory):
    model = build_vllm_tiny_model(tokenizer, tie_word_embeddings=tied)
    args = SGPOConfig(
        output_dir=str(tmp_path_factory.mktemp("out")),
        use_vllm=True,
        temperature=TEMPERATURE,
        max_completion_length=MAX_TOKENS,
        num_guided_generations=0,
        distill_coef=0.0,
        report_to="none",
    )
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    gen = make_vllm_generator(model, tokenizer, args, eos_ids(tokenizer, model))
    assert isinstance(gen, ColocatedVLLM)
    gen.model = model  # the weights the engine holds now (tests that push others put these back)
    gen.process_after_start = {"draws": torch.rand(3), "threads_before": threads, "threads_after": torch.get_num_threads()}
    yield gen
    gen.close()


def prompt_ids(tokenizer, texts=PROMPTS) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def trainer_logps(model, gen: Generation, temperature: float) -> torch.Tensor:
    """log π(y_t) of the completion tokens as the trainer scores them (final hidden states and
    `sgpo.objectives.sampled_logps` at the temperature), flattened over the completion mask."""
    ids = torch.cat([gen.prompt_ids, gen.completion_ids], 1)
    att = torch.cat([gen.prompt_mask, gen.completion_mask], 1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=att, position_ids=(att.cumsum(1) - 1).clamp(min=0), output_hidden_states=True)
    P = gen.prompt_ids.shape[1]
    hidden = out.hidden_states[-1][:, P - 1 : -1]
    mask = gen.completion_mask.bool()
    head = model.get_output_embeddings()
    return sampled_logps(hidden[mask], head.weight, gen.completion_ids[mask], temperature, getattr(head, "bias", None))


def gap_to(model, gen: Generation, temperature: float = TEMPERATURE) -> float:
    """Largest |log π_sampler − log π_trainer| over the sampled tokens."""
    return (trainer_logps(model, gen, temperature) - gen.sampler_logps[gen.completion_mask.bool()]).abs().max().item()


def test_starting_the_engine_leaves_the_process_random_state_and_threads_alone(engine):
    # vLLM seeds the global generators when it starts in-process; build_llm puts the caller's state back
    after = engine.process_after_start
    torch.manual_seed(123)
    assert torch.equal(after["draws"], torch.rand(3))
    assert after["threads_after"] == after["threads_before"]


def test_rows_follow_the_prompts_and_their_counts(engine, tokenizer):
    ids = prompt_ids(tokenizer)[:3]
    gen = engine.generate(ids, n=[2, 0, 3])
    assert gen.completion_ids.shape[0] == 5 and len(gen.texts) == 5
    rows = [r[m.bool()].tolist() for r, m in zip(gen.prompt_ids, gen.prompt_mask)]
    assert rows == [ids[0]] * 2 + [ids[2]] * 3
    assert gen.sampler_logps.shape == gen.completion_ids.shape
    assert (gen.sampler_logps[~gen.completion_mask.bool()] == 0).all()  # padding
    assert (gen.sampler_logps[gen.completion_mask.bool()] < 0).all()
    assert gen.texts[0] == tokenizer.decode(gen.completion_ids[0][gen.completion_mask[0].bool()], skip_special_tokens=True)
    assert engine.generate([], n=[]).completion_ids.shape[0] == 0


def test_vllm_samples_from_the_distribution_the_trainer_scores(engine, tokenizer):
    engine.load_weights(engine.model)
    gen = engine.generate(prompt_ids(tokenizer), n=4)
    assert int(gen.completion_mask.sum()) > 40
    # the log-probs of what vLLM sampled, under the distribution it sampled from, are the trainer's
    # log-probs at the same temperature (fp32 on both sides: equal to float rounding)
    assert gap_to(engine.model, gen) < 1e-4
    # the check can fail: at temperature 1 (or with vLLM's raw log-probs) the same tokens score differently
    assert gap_to(engine.model, gen, temperature=1.0) > 0.05


def test_top_k_truncates_as_asked_and_zero_means_off(engine, tokenizer):
    engine.load_weights(engine.model)
    ids = prompt_ids(tokenizer)
    k3 = SamplingSettings(max_tokens=MAX_TOKENS, temperature=TEMPERATURE, top_k=3)
    gen = engine.generate(ids, n=4, sampling=k3)
    mask = gen.completion_mask.bool()
    logp = trainer_logps(engine.model, gen, TEMPERATURE)
    # every sampled token is among the trainer's top 3 at its position, and vLLM reports its
    # log-prob renormalised over those 3: log p − log Σ_top3 p
    full = _position_logps(engine.model, gen, TEMPERATURE)
    top3 = full.topk(3, dim=-1)
    assert all(t in row for t, row in zip(gen.completion_ids[mask].tolist(), top3.indices.tolist()))
    assert torch.allclose(gen.sampler_logps[mask], logp - top3.values.logsumexp(-1), atol=1e-4)
    # top_k=0 (the trainer's default): the near-uniform tiny model draws tokens far outside any top 50
    gen = engine.generate(ids, n=4)
    ranks = (_position_logps(engine.model, gen, TEMPERATURE) > trainer_logps(engine.model, gen, TEMPERATURE).unsqueeze(1)).sum(-1)
    assert int(ranks.max()) >= 50


def _position_logps(model, gen: Generation, temperature: float) -> torch.Tensor:
    """(M, V) log-softmax at each completion position (flattened over the mask)."""
    ids = torch.cat([gen.prompt_ids, gen.completion_ids], 1)
    att = torch.cat([gen.prompt_mask, gen.completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att, position_ids=(att.cumsum(1) - 1).clamp(min=0)).logits
    P = gen.prompt_ids.shape[1]
    return (logits[:, P - 1 : -1][gen.completion_mask.bool()] / temperature).log_softmax(-1)


def test_completions_end_at_the_first_stop_token_and_keep_it(engine, tokenizer):
    # every number token stops a completion (most of the vocabulary): completions end early
    stops = tuple(tokenizer.convert_tokens_to_ids([str(d) for d in range(100)]))
    settings = SamplingSettings(max_tokens=MAX_TOKENS, temperature=TEMPERATURE, stop_token_ids=stops)
    gen = engine.generate(prompt_ids(tokenizer), n=4, sampling=settings)
    lengths = gen.completion_mask.sum(1)
    assert int((lengths < MAX_TOKENS).sum()) >= 8
    # the HF path's rule: the mask covers the tokens up to and including the first stop token
    assert torch.equal(gen.completion_mask, completion_mask_from_ids(gen.completion_ids, stops) * gen.completion_mask)
    for row, n in zip(gen.completion_ids.tolist(), lengths.tolist()):
        assert not set(row[: n - 1]) & set(stops)
        assert n == MAX_TOKENS or row[n - 1] in stops


def test_generation_follows_the_weights_after_an_optimizer_step(engine, tokenizer):
    before = engine.model
    after = build_vllm_tiny_model(tokenizer, tie_word_embeddings=before.config.tie_word_embeddings)
    after.load_state_dict(before.state_dict())
    # one optimizer step, as the trainer takes it
    opt = torch.optim.Adam(after.parameters(), lr=0.05)
    ids = torch.tensor(prompt_ids(tokenizer, ["what is 3 plus 4 the answer is 7"]))
    after(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    if before.config.tie_word_embeddings:
        assert after.lm_head.weight is after.model.embed_tokens.weight
    # long prompts fill whole KV-cache blocks, so a stale prefix cache would be reused
    long = [tokenizer("please reason step by step " * 30 + t, add_special_tokens=False)["input_ids"] for t in PROMPTS]
    engine.load_weights(before)
    stale = engine.generate(long, n=2)
    assert gap_to(before, stale) < 1e-4
    assert gap_to(after, stale) > 1e-2  # the engine still holds the old weights: a visible difference
    engine.load_weights(after)
    fresh = engine.generate(long, n=2)
    assert gap_to(after, fresh) < 1e-4
    engine.load_weights(before)
    assert gap_to(before, engine.generate(long, n=2)) < 1e-4


def test_sync_weights_pushes_only_when_the_version_changes(engine):
    pushes = engine.num_pushes
    assert engine.sync_weights(engine.model, version=("test", 1)) is True
    assert engine.sync_weights(engine.model, version=("test", 1)) is False
    assert engine.sync_weights(engine.model, version=("test", 2)) is True
    assert engine.num_pushes == pushes + 2


def test_a_prompt_that_leaves_no_room_fails_clearly(engine):
    # the tiny model's context is 512 tokens: 505 + 12 new ones do not fit
    with pytest.raises(ValueError, match=r"prompt 1 has 505 tokens: with 12 new tokens it needs a context of 517"):
        engine.generate([[5, 6], [5] * 505], n=1)
