"""Sequences back-propagated in groups (`backward_group_size`, `backward_group_tokens`): the loss is a
sum over sequences with the whole step's normalisers, so running a micro-batch's sequences through
forward + backward in groups must give the same update as all at once. Multi-process engines (DDP,
FSDP2, ZeRO-2/3): tests/test_distributed.py and tests/test_sharded.py."""

import pytest
import torch

import sgpo.trainer
from sgpo.objectives import GlobalCounts, LossConfig, LossInputs, select_rows, sgpo_loss
from sgpo.phases import Packed, backward_groups
from sgpo.testing import build_tiny_model
from test_trainer import config

from conftest import FixedRolloutTrainer, even_answer_reward, param_snapshot


def packed(prompt_lens, completion_lens) -> Packed:
    """Rows with the given real lengths: prompts left-padded, completions right-padded."""
    P, C = max(prompt_lens), max(completion_lens)
    pm = torch.tensor([[0] * (P - n) + [1] * n for n in prompt_lens])
    cm = torch.tensor([[1] * n + [0] * (C - n) for n in completion_lens])
    return Packed(pm * 5, pm, cm * 7, cm)


def test_groups_of_at_most_k_rows_cover_every_row_once():
    rows = packed([3] * 5, [4] * 5)
    assert backward_groups(rows) == [slice(0, 5)]
    assert backward_groups(rows, group_size=2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert backward_groups(rows, group_size=1) == [slice(k, k + 1) for k in range(5)]
    assert backward_groups(rows, group_size=5) == backward_groups(rows, group_size=9) == [slice(0, 5)]


def test_token_budget_counts_rows_times_the_longest_prompt_and_completion():
    # rows of 2+2, 2+2, 4+6, 1+1 tokens: padded cost of a group = rows × (longest prompt + longest completion)
    rows = packed([2, 2, 4, 1], [2, 2, 6, 1])
    # budget 8: rows 0-1 cost 2 × 4 = 8; adding row 2 would cost 3 × 10; row 2 alone costs 10 > 8 but a
    # group always holds one row; rows 2-3 would cost 2 × 10
    assert backward_groups(rows, group_tokens=8) == [slice(0, 2), slice(2, 3), slice(3, 4)]
    assert backward_groups(rows, group_tokens=20) == [slice(0, 2), slice(2, 4)]
    assert backward_groups(rows, group_tokens=40) == [slice(0, 4)]
    # both limits: whichever binds first
    assert backward_groups(rows, group_size=1, group_tokens=40) == [slice(k, k + 1) for k in range(4)]


def _loss_inputs(Na=3, Nd=2, C=5, H=6, V=11, seed=0) -> LossInputs:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(Na + Nd, C, generator=g) > 0.3).float()
    mask[:, 0] = 1
    return LossInputs(
        head_weight=torch.randn(V, H, generator=g, dtype=torch.float64).requires_grad_(),
        head_bias=None,
        auto_hidden=torch.randn(Na, C, H, generator=g, dtype=torch.float64).requires_grad_(),
        auto_ids=torch.randint(V, (Na, C), generator=g),
        auto_mask=mask[:Na],
        advantages=torch.randn(Na, generator=g),
        auto_counts=GlobalCounts(Na + 4.0, float(mask[:Na].sum()) + 9.0, C),  # the step's counts: more than here
        old_logps=-torch.rand(Na, C, generator=g, dtype=torch.float64),
        distill_hidden=torch.randn(Nd, C, H, generator=g, dtype=torch.float64).requires_grad_(),
        distill_ids=torch.randint(V, (Nd, C), generator=g),
        distill_mask=mask[Na:],
        distill_weights=torch.rand(Nd, generator=g),
        teacher_hidden=torch.randn(Nd, C, H, generator=g, dtype=torch.float64),
        distill_old_logps=-torch.rand(Nd, C, generator=g, dtype=torch.float64),
        distill_tokens=float(mask[Na:].sum()) + 6.0,
    )


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("head", ["chunked", "plain"])
def test_the_loss_of_a_partition_of_the_rows_sums_to_the_whole(loss_type, head):
    x = _loss_inputs()
    cfg = LossConfig(loss_type=loss_type, head=head, distill_kl_cap=2.0)
    leaves = (x.head_weight, x.auto_hidden, x.distill_hidden)
    whole = sgpo_loss(x, cfg).loss
    expected = torch.autograd.grad(whole, leaves)
    # the groups a micro-batch of 3 autonomous + 2 distilled rows is cut into with groups of 2
    parts = [
        select_rows(x, slice(0, 2), slice(0, 0)),
        select_rows(x, slice(2, 3), slice(0, 1)),
        select_rows(x, slice(3, 3), slice(1, 2)),
    ]
    total = sum(sgpo_loss(p, cfg).loss for p in parts)
    got = torch.autograd.grad(total, leaves)
    torch.testing.assert_close(total, whole, atol=1e-7, rtol=0)  # the RL term computes in float32
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


def test_select_rows_cuts_every_per_row_field_and_keeps_the_shared_ones():
    x = _loss_inputs()
    part = select_rows(x, slice(1, 3), slice(1, 2), width=4)
    assert part.auto_hidden.shape == (2, 4, 6) and part.auto_mask.shape == (2, 4) and part.old_logps.shape == (2, 4)
    assert part.advantages.shape == (2,) and part.distill_weights.shape == (1,)
    assert part.teacher_hidden.shape == (1, 4, 6) and part.distill_old_logps.shape == (1, 4)
    torch.testing.assert_close(part.teacher_hidden, x.teacher_hidden[1:2, :4])
    assert part.head_weight is x.head_weight and part.auto_counts == x.auto_counts and part.distill_tokens == x.distill_tokens


def sgd_update(tmp_path, tokenizer, rows, **kw) -> dict[str, torch.Tensor]:
    """The parameter change of SGD with learning rate 1 (the summed gradients) on fixed rollouts."""
    model = build_tiny_model(tokenizer)
    before = param_snapshot(model)
    base = dict(optim="sgd", learning_rate=1.0, max_grad_norm=0.0, max_steps=1, weight_decay=0.0, shuffle_dataset=False)
    args = config(tmp_path, **{**base, "distill_on": "all", "instance_weighting": "constant", **kw})
    FixedRolloutTrainer(
        model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows
    ).train()
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}


def _forward_rows(monkeypatch) -> list[int]:
    """Records the rows of every student forward of the loss step."""
    seen: list[int] = []
    real = sgpo.trainer.completion_hidden

    def spy(model, rows):
        seen.append(rows.num_rows)
        return real(model, rows)

    monkeypatch.setattr(sgpo.trainer, "completion_hidden", spy)
    return seen


SCENARIOS = {
    # 2 micro-batches of 2 problems (3 autonomous + 2 guided each: 10 sequences) per optimizer step
    "accumulate": dict(per_device_train_batch_size=2, gradient_accumulation_steps=2),
    # one generation batch trained twice (π_old and the teacher's head snapshot), with a reference model
    "reuse": dict(per_device_train_batch_size=4, num_iterations=2, max_steps=2, beta=0.1),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_update_is_the_same_with_groups_of_1_2_and_all(tmp_path, tokenizer, rows, monkeypatch, scenario, loss_type):
    seen = _forward_rows(monkeypatch)
    kw = dict(SCENARIOS[scenario], loss_type=loss_type)
    whole = sgd_update(tmp_path / "all", tokenizer, rows, **kw)
    assert max(seen) >= 10  # all of a micro-batch's sequences in one forward
    assert any(d.abs().max() > 0 for d in whole.values())
    for name, groups in {
        "1": dict(backward_group_size=1),
        "2": dict(backward_group_size=2),
        "tokens": dict(backward_group_tokens=40),
    }.items():
        seen.clear()
        delta = sgd_update(tmp_path / name, tokenizer, rows, **kw, **groups)
        assert 1 <= max(seen) <= groups.get("backward_group_size", 3), (name, seen)
        for n in whole:
            torch.testing.assert_close(delta[n], whole[n], atol=1e-6, rtol=0, msg=f"groups {name}: {n}")


def test_groups_report_the_whole_micro_batch_loss(tmp_path, tokenizer, rows):
    losses = []
    for k, size in enumerate((None, 1)):
        args = config(tmp_path / str(k), max_steps=1, distill_on="all", instance_weighting="constant", backward_group_size=size)
        trainer = FixedRolloutTrainer(
            build_tiny_model(tokenizer),
            args=args,
            processing_class=tokenizer,
            reward_funcs=[even_answer_reward],
            train_dataset=rows,
        )
        losses.append(trainer.train().training_loss)
    assert losses[0] != 0 and losses[1] == pytest.approx(losses[0], abs=1e-6)
