"""The trainer's update equals a plain reference of the SGPO loss (tests/sgpo_reference.py).

Each test runs the real trainer (real rewards, advantages, weights, selection, packing, no-grad
passes, LM-head kernels, optimizer) on fixed completions with known rewards, takes the update of
each optimizer step (SGD, lr 1, no norm clipping: update = gradient) and compares it with the
gradient of the reference loss computed one unpadded sequence at a time. The reward table is
chosen so that every wiring choice changes the update: the three instance weightings give three
different weight vectors, some guided completions are wrong (distill_on), some problems have
acc_auto > acc_guided > 0 (the sign of the marginal weight), the temperature is not 1, and the
reused-batch tests move the policy far enough that the proximal mask and the clip act.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from transformers import TrainerCallback

from sgpo.config import SGPOConfig
from sgpo.rollout import Generation, pad
from sgpo.testing import build_tiny_model
from sgpo.trainer import SGPOTrainer

from conftest import fixed_completion, param_snapshot
from sgpo_reference import Completion, Problem, RefConfig, reference_gradient
from sgpo_reference import weights as reference_weights

GA_, GG_ = 3, 2  # autonomous / guided completions per problem

# rewards per problem id: (autonomous group, guided group); acc_auto, acc_guided and the weights
# by hand (marginal = clip(g − a, 0, 1), deficit = (1 − a)·[g > 0], constant = 1):
#              acc_auto  acc_guided  marginal  deficit  constant
#   add-0        0          1/2        1/2       1         1
#   add-1        1/3        1          2/3       2/3       1
#   add-2        1          1/2        0         0         1     (flipped sign would give 1/2)
#   add-3        1/3        1/2        1/6       2/3       1
REWARDS = {
    "add-0": ([0, 0, 0], [1, 0]),
    "add-1": ([1, 0, 0], [1, 1]),
    "add-2": ([1, 1, 1], [1, 0]),
    "add-3": ([0, 1, 0], [0, 1]),
    "add-4": ([1, 0, 1], [1, 1]),
    "add-5": ([0, 0, 1], [0, 0]),
    "add-6": ([1, 1, 0], [1, 1]),
    "add-7": ([0, 1, 1], [1, 0]),
}
HAND_WEIGHTS = {  # the first generation batch, add-0 … add-3
    "marginal": [1 / 2, 2 / 3, 0.0, 1 / 6],
    "deficit": [1.0, 2 / 3, 0.0, 2 / 3],
    "constant": [1.0, 1.0, 1.0, 1.0],
}


def table_reward(prompts, completions, id, guided, **_):
    """The k-th autonomous / guided completion of problem `id` gets REWARDS[id][guided][k]."""
    seen: Counter = Counter()
    out = []
    for pid, g in zip(id, guided):
        out.append(float(REWARDS[pid][int(g)][seen[(pid, g)]]))
        seen[(pid, g)] += 1
    return out


class TableTrainer(SGPOTrainer):
    """Completions: `fixed_completion` of the prompt, cut at max_completion_length like `generate`
    would (a cut completion has no EOS and counts as truncated). Everything else is the real trainer."""

    def _generate(self, prompt_ids):
        seen: Counter = Counter()
        completions = []
        for p in prompt_ids:
            key = tuple(p)
            completions.append(fixed_completion(self.processing_class, key, seen[key])[: self.args.max_completion_length])
            seen[key] += 1
        tok = self.processing_class
        p_ids, p_mask = pad(prompt_ids, tok.pad_token_id, "left")
        c_ids, c_mask = pad(completions, tok.pad_token_id, "right")
        return Generation(p_ids, p_mask, c_ids, c_mask, tok.batch_decode(completions, skip_special_tokens=True))


class Snapshots(TrainerCallback):
    """Parameters after every optimizer step."""

    def __init__(self, model):
        self.model, self.after = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.after.append(param_snapshot(self.model))


def sgd_config(tmp_path, **kw) -> SGPOConfig:
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=GA_,
        num_guided_generations=GG_,
        max_completion_length=16,
        max_prompt_length=96,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        shuffle_dataset=False,
        temperature=0.7,
    )
    base.update(kw)
    return SGPOConfig(**base)


def sharpened_model(tokenizer, head_bias: bool = False):
    """A tiny random Qwen2 scaled up so that the strategy in the prompt visibly shifts p_t (a random
    init barely reacts to its context). With `head_bias`, an LM head with a bias (as e.g. Phi's)."""
    model = build_tiny_model(tokenizer)
    if head_bias:
        old = model.lm_head
        model.lm_head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
        with torch.no_grad():
            model.lm_head.weight.copy_(old.weight)
            model.lm_head.bias.copy_(torch.linspace(-1, 1, old.out_features))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def model_with(tokenizer, state: dict[str, torch.Tensor], head_bias: bool):
    m = sharpened_model(tokenizer, head_bias)
    m.load_state_dict(state, strict=False)
    return m.eval()


def reference_problems(trainer: SGPOTrainer, ids: list[str]) -> list[Problem]:
    """The fixed rollouts and table rewards of problems `ids`, as the reference wants them."""
    tok, max_len = trainer.processing_class, trainer.args.max_completion_length
    by_id = {row["id"]: row for row in trainer.train_dataset}
    problems = []
    for pid in ids:
        row = by_id[pid]
        prompt, guided = list(row["_prompt_ids"]), list(row["_guided_ids"])
        p = Problem(prompt=prompt, guided_prompt=guided)
        for group, ctx, n in ((p.auto, prompt, GA_), (p.guided, guided, GG_)):
            for k in range(n):
                full = fixed_completion(tok, tuple(ctx), k)
                group.append(Completion(full[:max_len], float(REWARDS[pid][group is p.guided][k]), len(full) > max_len))
        problems.append(p)
    return problems


def ref_config(args: SGPOConfig) -> RefConfig:
    names = RefConfig.__dataclass_fields__
    return RefConfig(**{k: getattr(args, k) for k in names})


def run_and_compare(tmp_path, tokenizer, rows, *, head_bias=False, steps_per_batch=1, **kw):
    """Train, then check every optimizer step's update (SGD, lr 1: the gradient) against the reference gradient."""
    model = sharpened_model(tokenizer, head_bias)
    init = param_snapshot(model)
    args = sgd_config(tmp_path, **kw)
    trainer = TableTrainer(model, args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows)
    snaps = Snapshots(model)
    trainer.add_callback(snaps)
    trainer.train()
    states = [init] + snaps.after
    ids = [f"add-{i}" for i in range(args.per_device_train_batch_size)]
    problems = reference_problems(trainer, ids)
    ref_cfg = ref_config(args)
    ref_model = model_with(tokenizer, init, head_bias) if args.beta > 0 else None
    for s in range(args.max_steps):
        old = model_with(tokenizer, states[(s // steps_per_batch) * steps_per_batch], head_bias)
        current = model_with(tokenizer, states[s], head_bias).train()
        expected = reference_gradient(current, old, ref_model, problems, ref_cfg)
        for n in expected:
            update = states[s][n] - states[s + 1][n]
            torch.testing.assert_close(update, expected[n], atol=2e-5, rtol=1e-4, msg=lambda m: f"step {s + 1}, {n}: {m}")
    assert any((states[0][n] - states[1][n]).abs().max() > 1e-3 for n in states[0])  # a real update
    return trainer, problems, ref_cfg


def logged(tmp_path):
    import json

    return [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


@pytest.mark.parametrize(
    "kw",
    [
        dict(instance_weighting="marginal", distill_on="correct", loss_type="dapo"),
        dict(instance_weighting="deficit", distill_on="all", loss_type="grpo", distill_divergence="reverse_kl"),
        dict(instance_weighting="constant", distill_on="correct", loss_type="dr_grpo", distill_kl_cap=0.05),
        dict(instance_weighting="marginal", distill_on="all", distill_divergence="imitation", scale_rewards="none"),
    ],
    ids=["marginal-correct-dapo", "deficit-all-grpo-reverse", "constant-cap-drgrpo", "imitation"],
)
def test_update_equals_reference(tmp_path, tokenizer, rows, kw):
    trainer, problems, ref_cfg = run_and_compare(tmp_path, tokenizer, rows, **kw)
    # the hand-derived weights of the table are what the trainer used (and what the reference used)
    hand = HAND_WEIGHTS[kw["instance_weighting"]]
    assert reference_weights(problems, ref_cfg) == pytest.approx(hand)
    assert logged(tmp_path)[0]["distill/weight_mean"] == pytest.approx(sum(hand) / len(hand), rel=1e-6)


def test_all_three_weightings_give_different_updates(tmp_path, tokenizer, rows):
    # guards the tests above: if the weighting did not matter for this table, they could not catch a
    # swapped or sign-flipped weight
    ref_cfg = RefConfig(temperature=0.7, max_completion_length=16)
    grads = []
    for mode in ("marginal", "deficit", "constant"):
        model = sharpened_model(tokenizer)
        trainer = TableTrainer(
            model, args=sgd_config(tmp_path / mode), processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows
        )
        problems = reference_problems(trainer, ["add-0", "add-1", "add-2", "add-3"])
        ref_cfg.instance_weighting = mode
        grads.append(reference_gradient(model, model, None, problems, ref_cfg)["lm_head.weight"])
    assert (grads[0] - grads[1]).abs().max() > 1e-4 and (grads[0] - grads[2]).abs().max() > 1e-4


@pytest.mark.parametrize("proximal", [True, False], ids=["proximal", "no-proximal"])
@pytest.mark.parametrize("head_bias", [False, True], ids=["no-bias", "head-bias"])
def test_reused_batch_updates_equal_reference(tmp_path, tokenizer, rows, proximal, head_bias):
    # one generation batch, two optimizer steps on it (num_iterations=2): step 2 is off-policy, so old log-probs, the clip, the proximal mask and the rollout-time teacher (LM head
    # and bias included) all enter the update
    trainer, problems, ref_cfg = run_and_compare(
        tmp_path,
        tokenizer,
        rows,
        head_bias=head_bias,
        steps_per_batch=2,
        num_iterations=2,
        max_steps=2,
        distill_on="all",
        instance_weighting="constant",
        distill_proximal=proximal,
        epsilon_high=0.28,
        beta=0.05,
    )
    logs = logged(tmp_path)
    assert logs[0]["distill/masked_frac"] == 0.0 and logs[0]["clip/region"] == 0.0  # on-policy step
    if proximal:
        assert max(m["distill/masked_frac"] for m in logs[1:]) > 0.02  # the mask acted (else this proves nothing)
    assert max(m["clip/region"] for m in logs[1:]) > 0


def test_truncated_completions_masked(tmp_path, tokenizer, rows):
    # max_completion_length 8 cuts the completions with 2 leading "step" words (9 tokens): they are
    # truncated, and with mask_truncated_completions they leave both terms
    trainer, problems, _ = run_and_compare(
        tmp_path,
        tokenizer,
        rows,
        max_completion_length=8,
        mask_truncated_completions=True,
        distill_on="all",
        instance_weighting="constant",
    )
    n_trunc = sum(c.truncated for p in problems for c in p.auto + p.guided)
    assert 0 < n_trunc < sum(len(p.auto) + len(p.guided) for p in problems)
    assert logged(tmp_path)[0]["completions/truncated_frac"] == pytest.approx(n_trunc / 20)


# ------------------------------------------------------------------------------------ defects


def test_all_masked_micro_batch_trains_on_with_zero_gradient(tmp_path, tokenizer, rows):
    # max_completion_length 2 cuts every completion (no EOS: truncated) and mask_truncated_completions
    # removes them all; nothing is distilled either. The step must run (it used to fail in backward:
    # "element 0 of tensors does not require grad") and leave the parameters exactly where they were.
    model = sharpened_model(tokenizer)
    before = param_snapshot(model)
    args = sgd_config(tmp_path, max_completion_length=2, mask_truncated_completions=True, max_steps=2)
    TableTrainer(model, args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows).train()
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    logs = logged(tmp_path)
    assert len(logs) == 2 and all(m["completions/truncated_frac"] == 1.0 for m in logs)


def test_real_generation_with_every_completion_truncated(tmp_path, tokenizer, tiny_model, rows):
    # the reproduction with real sampling: one-token completions, truncated ones masked
    args = sgd_config(tmp_path, max_completion_length=1, mask_truncated_completions=True, max_steps=2, temperature=1.0)
    SGPOTrainer(tiny_model, args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows).train()
    assert len(logged(tmp_path)) == 2


@pytest.mark.parametrize(
    "kw,checkpoint",
    [
        (dict(steps_per_generation=4, gradient_accumulation_steps=2, per_device_train_batch_size=1), 1),
        (dict(num_iterations=2, per_device_train_batch_size=2), 1),
        (dict(num_iterations=2, per_device_train_batch_size=2), 2),
    ],
    ids=["steps_per_generation-mid", "num_iterations-mid", "num_iterations-boundary"],
)
def test_resume_inside_a_generation_period_reproduces_the_run(tmp_path, tokenizer, rows, kw, checkpoint):
    # a checkpoint taken in the middle of a generation period: the resumed run must train the rest of
    # the period on the same rollouts, π_old and teacher as the uninterrupted run (not on a fresh
    # sample from the policy it resumed with), and reach the same parameters
    common = dict(
        max_steps=4,
        distill_on="all",
        instance_weighting="marginal",
        instance_weight_ema=0.5,
        learning_rate=0.05,
        shuffle_dataset=True,
        epsilon_high=0.28,
        **kw,
    )
    straight = sharpened_model(tokenizer)
    TableTrainer(
        straight,
        args=sgd_config(tmp_path / "a", **common),
        processing_class=tokenizer,
        reward_funcs=[table_reward],
        train_dataset=rows,
    ).train()

    args = sgd_config(tmp_path / "b", save_strategy="steps", save_steps=1, **common)
    TableTrainer(
        sharpened_model(tokenizer), args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows
    ).train()
    ckpt = tmp_path / "b" / "out" / f"checkpoint-{checkpoint}"
    mid_period = any(ckpt.glob("rollout_buffer_rank*.pt"))
    assert mid_period == (checkpoint == 1)
    resumed = sharpened_model(tokenizer)
    with torch.no_grad():  # everything must come from the checkpoint
        for p in resumed.parameters():
            p.add_(0.5)
    args = sgd_config(tmp_path / "b", **common)
    TableTrainer(resumed, args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows).train(
        resume_from_checkpoint=str(ckpt)
    )
    for (n, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0, msg=n)
    # metrics.jsonl was cut back to the checkpoint's step before the resumed run appended to it
    assert [m["step"] for m in logged(tmp_path / "b")] == [1, 2, 3, 4]


class MismatchedSamplerTrainer(TableTrainer):
    """As if another engine (vLLM) had sampled the fixed completions, giving each sampled token a
    log-prob ln 2 above the trainer's: every importance ratio π_old / π_sampler is exactly 1/2."""

    def _generate(self, prompt_ids):
        from sgpo.objectives import sampled_logps
        from sgpo.phases import Packed, completion_hidden

        gen = super()._generate(prompt_ids)
        with torch.no_grad():
            h = completion_hidden(self.model, Packed(gen.prompt_ids, gen.prompt_mask, gen.completion_ids, gen.completion_mask))
            head = self.model.get_output_embeddings()
            mask = gen.completion_mask.bool()
            logp = torch.zeros(mask.shape)
            logp[mask] = sampled_logps(h[mask], head.weight, gen.completion_ids[mask], self.args.temperature)
        gen.sampler_logps = torch.where(mask, logp + math.log(2.0), torch.zeros_like(logp))
        return gen


def test_importance_weights_of_the_sampler_reach_the_rl_term(tmp_path, tokenizer, rows):
    # GRPO (no distillation), one step, SGD: with every ratio 1/2 (token_truncate, cap 3) the RL
    # gradient is exactly half of the uncorrected one
    deltas = {}
    for on in (True, False):
        model = sharpened_model(tokenizer)
        before = param_snapshot(model)
        args = sgd_config(
            tmp_path / str(on),
            use_vllm=True,
            vllm_importance_sampling_correction=on,
            vllm_importance_sampling_mode="token_truncate",
            distill_coef=0.0,
            num_guided_generations=0,
        )
        MismatchedSamplerTrainer(
            model, args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows
        ).train()
        deltas[on] = {n: before[n] - p.detach() for n, p in model.named_parameters()}
        if on:
            log = logged(tmp_path / str(on))[0]
            assert log["sampling/importance_sampling_ratio/mean"] == pytest.approx(0.5, abs=1e-5)
            assert log["sampling/sampling_logp_difference/max"] == pytest.approx(math.log(2.0), abs=1e-5)
    assert max(d.abs().max() for d in deltas[False].values()) > 1e-3
    for n in deltas[True]:
        torch.testing.assert_close(deltas[True][n], 0.5 * deltas[False][n], atol=1e-6, rtol=1e-4, msg=n)


@pytest.mark.parametrize(
    "mode,factor",
    [("sequence_truncate", 0.05), ("sequence_mask", 0.0)],
    ids=["sequence_truncate", "sequence_mask"],
)
def test_sequence_level_importance_modes_reach_the_rl_term(tmp_path, tokenizer, rows, mode, factor):
    # the mode is the trainer's to pass on (forcing token_truncate must fail here). Every token's ratio is
    # 1/2, so a sequence of L tokens (7 to 9 here) has ratio 2^-L < 1/100: below clip_min = 0.05 it is
    # raised to 0.05 (truncate: the RL gradient is 0.05 × the uncorrected one) or zeroed (mask: none);
    # token level would give 1/2 per token
    deltas, logs = {}, {}
    for on in (True, False):
        model = sharpened_model(tokenizer)
        before = param_snapshot(model)
        args = sgd_config(
            tmp_path / str(on), use_vllm=True, vllm_importance_sampling_correction=on, vllm_importance_sampling_mode=mode,
            vllm_importance_sampling_clip_min=0.05, distill_coef=0.0, num_guided_generations=0,
        )  # fmt: skip
        MismatchedSamplerTrainer(
            model, args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows
        ).train()
        deltas[on] = {n: before[n] - p.detach() for n, p in model.named_parameters()}
        logs[on] = logged(tmp_path / str(on))[0]
    assert max(d.abs().max() for d in deltas[False].values()) > 1e-3
    for n in deltas[True]:
        torch.testing.assert_close(deltas[True][n], factor * deltas[False][n], atol=1e-6, rtol=1e-4, msg=n)
    # one ratio per sequence (12 autonomous sequences), each clamped to 0.05 or masked to 0
    assert logs[True]["sampling/importance_sampling_ratio/mean"] == pytest.approx(factor, abs=1e-6)
    assert logs[True]["sampling/importance_sampling_ratio/max"] == pytest.approx(factor, abs=1e-6)


def step_table_reward(prompts, completions, id, guided, trainer_state, **_):
    """`table_reward` at the first rollout; from the second on every guided completion is right and
    every autonomous one wrong (marginal weight 1 for every problem)."""
    if trainer_state.global_step == 0:
        return table_reward(prompts, completions, id, guided)
    return [1.0 if g else 0.0 for g in guided]


def test_instance_weight_ema_keeps_decay_of_the_old_value(tmp_path, tokenizer, rows):
    # decay 0.9 (not 0.5, where decay and 1 − decay look alike): w̄ = w at a problem's first sight, then
    # w̄ ← 0.9·w̄ + 0.1·w. Step 1: the hand weights (marginal) [1/2, 2/3, 0, 1/6], mean 1/3; step 2 sees the
    # same four problems with w = 1: mean 0.9·(1/3) + 0.1·1 = 0.4 (swapped decay: 0.1/3 + 0.9 = 0.9333)
    args = sgd_config(tmp_path, instance_weight_ema=0.9, max_steps=2, learning_rate=0.0, distill_on="all")
    TableTrainer(
        sharpened_model(tokenizer),
        args=args,
        processing_class=tokenizer,
        reward_funcs=[step_table_reward],
        train_dataset=rows[:4],
    ).train()
    first, second = logged(tmp_path)
    assert first["distill/weight_mean"] == pytest.approx(sum(HAND_WEIGHTS["marginal"]) / 4)
    assert second["distill/weight_mean"] == pytest.approx(0.9 * sum(HAND_WEIGHTS["marginal"]) / 4 + 0.1)


def test_metrics_split_by_strategy_source(tmp_path, tokenizer, rows):
    # rows from `sgpo library retrieve`: add-0 and add-1 keep their own strategy, add-2 and add-3 got a
    # retrieved one. By hand from REWARDS: guided accuracy own (1/2 + 1)/2 = 3/4, retrieved (1/2 + 1/2)/2
    # = 1/2; guided − autonomous reward own ((1/2 − 0) + (1 − 1/3))/2 = 7/12, retrieved
    # ((1/2 − 1) + (1/2 − 1/3))/2 = −1/6; constant weights; each source's KL is the mean over its own
    # distilled tokens, so the overall KL lies between them
    for r in rows:
        r["strategy_source"] = "own" if r["id"] in ("add-0", "add-1") else "retrieved"
    args = sgd_config(tmp_path, instance_weighting="constant", distill_on="all", learning_rate=0.0)
    TableTrainer(
        sharpened_model(tokenizer), args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows
    ).train()
    log = logged(tmp_path)[0]
    assert log["accuracy/guided/own"] == pytest.approx(3 / 4) and log["accuracy/guided/retrieved"] == pytest.approx(1 / 2)
    assert log["reward/gap/own"] == pytest.approx(7 / 12) and log["reward/gap/retrieved"] == pytest.approx(-1 / 6)
    assert log["distill/weight_mean/own"] == 1.0
    lo, hi = sorted([log["distill/kl/own"], log["distill/kl/retrieved"]])
    assert lo < log["distill/kl"] < hi and lo > 0


def test_luffy_mixed_groups_update_equals_reference(tmp_path, tokenizer, rows):
    # LUFFY (mix_strong_responses, dr_grpo, no guided rollouts): each problem's first autonomous slot
    # holds its strong response; the table reward scores it like any rollout (so advantages are over the
    # mixed group), and its tokens take −A·p/(p+γ) instead of the clipped surrogate
    for r in rows:
        r["response"] = f"the answer is \\boxed{{ {r['answer']} }}"
    model = sharpened_model(tokenizer)
    init = param_snapshot(model)
    args = sgd_config(
        tmp_path,
        mix_strong_responses=True,
        loss_type="dr_grpo",
        num_guided_generations=0,
        distill_coef=0.0,
        policy_shaping_gamma=0.5,  # not the default 0.1: the trainer must pass it to the loss
    )
    trainer = TableTrainer(model, args=args, processing_class=tokenizer, reward_funcs=[table_reward], train_dataset=rows)
    trainer.train()
    problems = reference_problems(trainer, ["add-0", "add-1", "add-2", "add-3"])
    tok = trainer.processing_class
    for p, row in zip(problems, rows[:4]):
        # slot 0: the strong response (scored as the group's first completion); slots 1, 2: the two
        # samples, which are the prompt's first and second fixed completions
        ids = tok(row["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        sampled = [fixed_completion(tok, tuple(p.prompt), k) for k in range(GA_ - 1)]
        p.auto = [Completion(ids, p.auto[0].reward, off_policy=True)] + [
            Completion(c, a.reward) for c, a in zip(sampled, p.auto[1:])
        ]
        p.guided = []
    expected = reference_gradient(
        model_with(tokenizer, init, False).train(), model_with(tokenizer, init, False), None, problems, ref_config(args)
    )
    for n, q in model.named_parameters():
        torch.testing.assert_close(init[n] - q.detach(), expected[n], atol=2e-5, rtol=1e-4, msg=lambda m: f"{n}: {m}")
    log = logged(tmp_path)[0]
    assert log["reward/strong_response"] == pytest.approx(sum(REWARDS[f"add-{i}"][0][0] for i in range(4)) / 4)
    # the sampled tokens are counted, the inserted strong responses are not (`sgpo experiment`'s budget)
    assert log["tokens/generated"] == sum(len(c.ids) for p in problems for c in p.auto if not c.off_policy)
    # the shaped term matters: without it (plain surrogate on the same rows) the gradient differs
    for p in problems:
        p.auto[0].off_policy = False
    plain = reference_gradient(
        model_with(tokenizer, init, False).train(), model_with(tokenizer, init, False), None, problems, ref_config(args)
    )
    assert max((plain[n] - expected[n]).abs().max() for n in plain) > 1e-3


def test_luffy_needs_strong_responses_that_fit(tmp_path, tokenizer, tiny_model, rows):
    from sgpo.data import DataError

    args = sgd_config(tmp_path, mix_strong_responses=True, num_guided_generations=0, distill_coef=0.0)
    with pytest.raises(DataError, match="needs the strong responses in column 'response'"):
        SGPOTrainer(tiny_model, args=args, processing_class=tokenizer, train_dataset=rows)
    for r in rows:
        r["response"] = " ".join(["step"] * 20)
    with pytest.raises(
        DataError, match=r"8 strong response\(s\) longer than max_completion_length=16 .*row 0 \(id 'add-0'\) \(21 tokens\)"
    ):
        SGPOTrainer(tiny_model, args=args, processing_class=tokenizer, train_dataset=rows)
