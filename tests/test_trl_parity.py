"""GRPO is SGPOTrainer with distill_coef=0 and no guided rollouts: on the same fixed rollouts (same
prompts, completions and rewards) its loss, its gradient and its clip fractions equal TRL 1.16
GRPOTrainer's — on one on-policy step, and over several optimizer steps that reuse each generation
batch (num_iterations = 2), where old log-probs enter the ratio and the asymmetric clip acts.

Both trainers run their real pipelines (rewards, advantages, log-probs at the sampling temperature,
old log-probs, clipping, aggregation, SGD steps); only the completions are injected, through TRL's
`rollout_func` and our `_generate` hook, so both see the same tokens.
"""

import os
from collections import Counter

import pytest
import torch
from datasets import Dataset

from sgpo.config import SGPOConfig
from sgpo.testing import build_tiny_model, tiny_arithmetic_rows

from conftest import FixedRolloutTrainer, even_answer_reward, fixed_completion, param_snapshot

os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
G = 4
COMMON = dict(
    max_completion_length=10,
    learning_rate=1.0,
    optim="sgd",
    max_grad_norm=0.0,
    weight_decay=0.0,
    max_steps=1,
    logging_steps=1,
    report_to="none",
    use_cpu=True,
    save_strategy="no",
    seed=0,
    temperature=0.7,
    epsilon=0.2,
    scale_rewards="group",
    beta=0.0,
    num_generations=G,
    shuffle_dataset=False,
)


def trl_data(rows):
    """TRL's standard format: a `prompt` column (and the columns reward functions read)."""
    return [{"prompt": r["problem"], "answer": r["answer"]} for r in rows]


def run_trl(tmp_path, tokenizer, rows, loss_type, prompts_per_step=2, **extra):
    from trl import GRPOConfig, GRPOTrainer

    def rollout(prompts, trainer):
        seen: Counter = Counter()
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None}
        for p in prompts:
            ids = tuple(tokenizer(p, add_special_tokens=False)["input_ids"])
            out["prompt_ids"].append(list(ids))
            out["completion_ids"].append(fixed_completion(tokenizer, ids, seen[ids]))
            seen[ids] += 1
        return out

    model = build_tiny_model(tokenizer)
    before = param_snapshot(model)
    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=prompts_per_step * G,
        loss_type=loss_type,
        bf16=False,
        gradient_checkpointing=False,
        **{**COMMON, **extra},
    )
    data = Dataset.from_list(trl_data(rows))
    trainer = GRPOTrainer(
        model=model if not extra.get("beta") else saved(model, tokenizer, tmp_path / "init"),  # TRL loads its reference by path
        args=args,
        processing_class=tokenizer,
        reward_funcs=[even_answer_reward],
        train_dataset=data,
        rollout_func=rollout,
    )
    trainer.train()
    return trainer.state.log_history, before, trainer.model


def saved(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_ours(tmp_path, tokenizer, rows, loss_type, prompts_per_step=2, trl_format=False, **extra):
    """Our GRPO on the same rows: as `problem` data with a plain "{problem}" prompt, or (`trl_format`)
    on TRL's own data set with our defaults, which must prompt it as TRL does."""
    model = build_tiny_model(tokenizer)
    before = param_snapshot(model)
    prompts = {} if trl_format else dict(use_chat_template=False, prompt_template="{problem}")
    args = SGPOConfig(
        output_dir=str(tmp_path / "ours"),
        per_device_train_batch_size=prompts_per_step,
        loss_type=loss_type,
        distill_coef=0.0,
        num_guided_generations=0,
        **prompts,
        **{**COMMON, **extra},
    )
    data = trl_data(rows) if trl_format else rows
    trainer = FixedRolloutTrainer(
        model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=data
    )
    trainer.train()
    return trainer.state.log_history, before, model


def first_loss_and_update(history, before, model):
    loss = next(h["loss"] for h in history if "loss" in h)
    return loss, {n: before[n] - p.detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grpo_loss_and_gradient_equal_trl(tmp_path, tokenizer, loss_type):
    rows = tiny_arithmetic_rows(2)
    trl_loss, trl_delta = first_loss_and_update(*run_trl(tmp_path, tokenizer, rows, loss_type))
    our_loss, our_delta = first_loss_and_update(*run_ours(tmp_path, tokenizer, rows, loss_type))
    assert our_loss == pytest.approx(trl_loss, abs=1e-5)
    assert any(d.abs().max() > 1e-4 for d in trl_delta.values())  # the batch has a real gradient
    for n in trl_delta:
        torch.testing.assert_close(our_delta[n], trl_delta[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grpo_equals_trl_over_reused_batches(tmp_path, tokenizer, loss_type):
    # four optimizer steps on two generation batches, each used twice (num_iterations = 2): steps 2 and 4
    # are off-policy, so the ratio uses the old log-probs and the asymmetric clip (ε = 0.2, ε_high = 0.28)
    # acts; per-step loss and clip fractions and the final parameters must agree
    rows = tiny_arithmetic_rows(4)
    extra = dict(num_iterations=2, epsilon_high=0.28, max_steps=4, learning_rate=1.0, lr_scheduler_type="constant")
    trl_hist, _, trl_model = run_trl(tmp_path, tokenizer, rows, loss_type, **extra)
    our_hist, _, our_model = run_ours(tmp_path, tokenizer, rows, loss_type, **extra)
    trl_steps = [h for h in trl_hist if "loss" in h]
    our_steps = [h for h in our_hist if "loss" in h]
    assert len(trl_steps) == len(our_steps) == 4
    for t, o in zip(trl_steps, our_steps):
        assert o["loss"] == pytest.approx(t["loss"], abs=1e-5), (t["step"], o["loss"], t["loss"])
        for ours, theirs in (
            ("clip/low", "clip_ratio/low_mean"),
            ("clip/high", "clip_ratio/high_mean"),
            ("clip/region", "clip_ratio/region_mean"),
        ):
            assert o[ours] == pytest.approx(t[theirs], abs=1e-6), (t["step"], ours)
    # the reused steps really are off-policy and clipped (else this test would prove nothing)
    assert trl_steps[0]["clip_ratio/region_mean"] == 0 and trl_steps[2]["clip_ratio/region_mean"] == 0
    assert trl_steps[1]["clip_ratio/region_mean"] > 0 and trl_steps[3]["clip_ratio/region_mean"] > 0
    assert max(abs(t["loss"]) for t in trl_steps) > 1e-3
    for (n, p), q in zip(trl_model.named_parameters(), our_model.parameters()):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize(
    "loss_type,extra",
    [
        ("grpo", dict(importance_sampling_level="sequence")),
        ("dapo", dict(scale_rewards=False, beta=0.04)),
    ],
    ids=["gspo-sequence", "scale_rewards-false-beta"],
)
def test_trl_variants_and_metrics_equal_trl(tmp_path, tokenizer, loss_type, extra):
    # GSPO's sequence-level ratio, scale_rewards as TRL's boolean and the reference KL: per step the
    # loss, the clip fractions and TRL's metrics reward_std, frac_reward_zero_std, entropy and kl, and the
    # final parameters. Ours reads TRL's own data set (the `prompt` column) with its default prompts.
    # (bnpo depends on how a step is cut into micro-batches, which TRL shuffles at random: tests/test_trainer.py)
    rows = tiny_arithmetic_rows(4)
    extra = dict(extra, num_iterations=2, epsilon_high=0.28, max_steps=4, lr_scheduler_type="constant")
    trl_hist, _, trl_model = run_trl(tmp_path, tokenizer, rows, loss_type, **extra)
    our_hist, _, our_model = run_ours(tmp_path, tokenizer, rows, loss_type, trl_format=True, **extra)
    trl_steps = [h for h in trl_hist if "loss" in h]
    our_steps = [h for h in our_hist if "loss" in h]
    assert len(trl_steps) == len(our_steps) == 4
    names = ["reward_std", "frac_reward_zero_std", "entropy"] + (["kl"] if "beta" in extra else [])
    pairs = [
        ("clip/low", "clip_ratio/low_mean"),
        ("clip/high", "clip_ratio/high_mean"),
        ("clip/region", "clip_ratio/region_mean"),
    ]
    for t, o in zip(trl_steps, our_steps):
        assert o["loss"] == pytest.approx(t["loss"], abs=1e-5), (t["step"], o["loss"], t["loss"])
        for ours, theirs in pairs + [(n, n) for n in names]:
            if theirs in t:  # TRL logs the rollout figures at the steps that sample
                assert o[ours] == pytest.approx(t[theirs], abs=1e-5), (t["step"], ours, o[ours], t[theirs])
    assert all(n in our_steps[0] for n in names) and max(t["clip_ratio/region_mean"] for t in trl_steps) > 0
    assert 0 < trl_steps[0]["frac_reward_zero_std"] < 1 or trl_steps[0]["reward_std"] > 0
    for (n, p), q in zip(trl_model.named_parameters(), our_model.parameters()):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-4, msg=n)
