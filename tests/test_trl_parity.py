"""GRPO is SGPOTrainer with distill_coef=0 and no guided rollouts: on one fixed batch (same prompts,
completions and rewards) its loss and its gradient equal TRL 1.16 GRPOTrainer's.

Both trainers run their real pipelines (rewards, advantages, log-probs at the sampling temperature,
aggregation, one SGD step); only the completions are injected, through TRL's `rollout_func` and our
`_generate` hook, so both see the same tokens.
"""

import os
from collections import Counter

import pytest
import torch
from datasets import Dataset

from conftest import FixedRolloutTrainer, even_answer_reward, fixed_completion, param_snapshot
from sgpo.config import SGPOConfig
from sgpo.testing import build_tiny_model, tiny_arithmetic_rows

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


def run_trl(tmp_path, tokenizer, rows, loss_type):
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
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=2 * G, loss_type=loss_type,
                      bf16=False, gradient_checkpointing=False, **COMMON)
    data = Dataset.from_list([{"prompt": r["problem"], "answer": r["answer"]} for r in rows])
    trainer = GRPOTrainer(model=model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward],
                          train_dataset=data, rollout_func=rollout)
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return loss, {n: before[n] - p.detach() for n, p in model.named_parameters()}


def run_ours(tmp_path, tokenizer, rows, loss_type):
    model = build_tiny_model(tokenizer)
    before = param_snapshot(model)
    args = SGPOConfig(output_dir=str(tmp_path / "ours"), per_device_train_batch_size=2, loss_type=loss_type,
                      distill_coef=0.0, num_guided_generations=0, use_chat_template=False, prompt_template="{problem}",
                      **COMMON)
    trainer = FixedRolloutTrainer(model, args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows)
    trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return loss, {n: before[n] - p.detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grpo_loss_and_gradient_equal_trl(tmp_path, tokenizer, loss_type):
    rows = tiny_arithmetic_rows(2)
    trl_loss, trl_delta = run_trl(tmp_path, tokenizer, rows, loss_type)
    our_loss, our_delta = run_ours(tmp_path, tokenizer, rows, loss_type)
    assert our_loss == pytest.approx(trl_loss, abs=1e-5)
    assert any(d.abs().max() > 1e-4 for d in trl_delta.values())  # the batch has a real gradient
    for n in trl_delta:
        torch.testing.assert_close(our_delta[n], trl_delta[n], atol=1e-5, rtol=1e-4, msg=n)
