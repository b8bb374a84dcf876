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


def run_trl(tmp_path, tokenizer, rows, loss_type, **extra):
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
        per_device_train_batch_size=2 * G,
        loss_type=loss_type,
        bf16=False,
        gradient_checkpointing=False,
        **{**COMMON, **extra},
    )
    data = Dataset.from_list([{"prompt": r["problem"], "answer": r["answer"]} for r in rows])
    trainer = GRPOTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        reward_funcs=[even_answer_reward],
        train_dataset=data,
        rollout_func=rollout,
    )
    trainer.train()
    return trainer.state.log_history, before, model


def run_ours(tmp_path, tokenizer, rows, loss_type, **extra):
    model = build_tiny_model(tokenizer)
    before = param_snapshot(model)
    args = SGPOConfig(
        output_dir=str(tmp_path / "ours"),
        per_device_train_batch_size=2,
        loss_type=loss_type,
        distill_coef=0.0,
        num_guided_generations=0,
        use_chat_template=False,
        prompt_template="{problem}",
        **{**COMMON, **extra},
    )
    trainer = FixedRolloutTrainer(
        model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows
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
