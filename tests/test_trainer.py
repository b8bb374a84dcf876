"""SGPOTrainer end to end on a tiny random Qwen2 and a tokenizer built here (no downloads)."""

import json
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

from sgpo.config import SGPOConfig
from sgpo.data import DataError
from sgpo.prompts import PromptTooLongError
from sgpo.rewards import RewardFunctionError
from sgpo.rollout import Generation, pad
from sgpo.testing import build_tiny_model
from sgpo.trainer import SGPOTrainer

from conftest import FixedRolloutTrainer, even_answer_reward, param_snapshot, text_length_reward


def config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        num_generations=3,
        num_guided_generations=2,
        max_completion_length=6,
        max_prompt_length=96,
        learning_rate=1e-2,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    base.update(kw)
    return SGPOConfig(**base)


def metrics(tmp_path):
    return [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]


def changed(before, model):
    return any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_sgpo_few_steps_real_generation(tmp_path, tokenizer, tiny_model, rows):
    args = config(tmp_path, distill_on="all", instance_weighting="constant", max_steps=3)
    trainer = SGPOTrainer(
        tiny_model, args=args, processing_class=tokenizer, reward_funcs=[text_length_reward], train_dataset=rows
    )
    before = param_snapshot(tiny_model)
    trainer.train()
    assert changed(before, tiny_model)
    logs = [m for m in metrics(tmp_path) if "loss" in m]
    assert len(logs) == 3
    for key in (
        "reward/auto",
        "reward/guided",
        "reward/gap",
        "accuracy/auto",
        "accuracy/guided",
        "distill/weight_mean",
        "distill/kl",
        "distill/masked_frac",
        "clip/low",
        "clip/high",
        "completion_length/auto",
        "completion_length/guided",
        "tokens_per_second",
        "rl/loss",
        "distill/loss",
    ):
        assert all(key in m for m in logs), key
    assert all(m["distill/kl"] > 0 for m in logs)  # random teacher ≠ student: the term is non-zero
    assert all(m["distill/loss"] != 0 for m in logs)
    # the saved model loads by path
    trainer.save_model(str(tmp_path / "final"))
    from sgpo.prompts import PromptFormat

    assert PromptFormat.from_file(tmp_path / "final" / "prompt_format.json") == trainer.prompt_format
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert torch.equal(reloaded.lm_head.weight, tiny_model.lm_head.weight)
    assert (tmp_path / "final" / "tokenizer.json").exists()


def test_grpo_special_case_makes_no_guided_rollouts(tmp_path, tokenizer, tiny_model, rows):
    args = config(tmp_path, distill_coef=0.0, num_guided_generations=0)
    trainer = SGPOTrainer(
        tiny_model, args=args, processing_class=tokenizer, reward_funcs=[text_length_reward], train_dataset=rows
    )
    before = param_snapshot(tiny_model)
    trainer.train()
    assert changed(before, tiny_model)
    logs = [m for m in metrics(tmp_path) if "loss" in m]
    assert logs and not any(k.startswith("distill/") or k.endswith("/guided") for m in logs for k in m)


def sgd_delta(tmp_path, tokenizer, rows, seed_model, **kw):
    from sgpo.testing import build_tiny_model

    model = build_tiny_model(tokenizer, seed=seed_model)
    before = param_snapshot(model)
    args = config(
        tmp_path,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        max_steps=1,
        weight_decay=0.0,
        shuffle_dataset=False,
        distill_on="all",
        instance_weighting="constant",
        **kw,
    )
    FixedRolloutTrainer(
        model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows
    ).train()
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}  # = lr · grad


class UnevenTrainer(FixedRolloutTrainer):
    """`fixed_completion` after a problem-dependent number of "step" words (0–3): problems differ in tokens."""

    def _generate(self, prompt_ids):
        gen = super()._generate(prompt_ids)
        tok = self.processing_class
        lengths = gen.completion_mask.sum(1).tolist()
        completions = [
            tok.convert_tokens_to_ids(["step"] * (sum(p) % 4)) + gen.completion_ids[j, : lengths[j]].tolist()
            for j, p in enumerate(prompt_ids)
        ]
        c_ids, c_mask = pad(completions, tok.pad_token_id, "right")
        return Generation(gen.prompt_ids, gen.prompt_mask, c_ids, c_mask, tok.batch_decode(completions, skip_special_tokens=True))


def test_bnpo_is_the_mean_of_each_micro_batchs_token_mean(tmp_path, tokenizer, rows):
    # TRL's bnpo: the token mean of each micro-batch, averaged over the micro-batches of the step. One
    # step of two micro-batches (problems add-0 and add-1, whose completions differ in length) must equal
    # the mean of the two one-problem steps (token mean of each), and differ from dapo's global token mean
    def delta(rows_, **kw):
        model = build_tiny_model(tokenizer)
        before = param_snapshot(model)
        args = config(tmp_path / str(len(list(tmp_path.iterdir()))), optim="sgd", learning_rate=1.0, max_grad_norm=0.0,
                      max_steps=1, weight_decay=0.0, shuffle_dataset=False, distill_coef=0.0, num_guided_generations=0,
                      per_device_train_batch_size=1, **kw)  # fmt: skip
        UnevenTrainer(
            model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows_
        ).train()
        return {n: before[n] - q.detach() for n, q in model.named_parameters()}

    bnpo = delta(rows[:2], loss_type="bnpo", gradient_accumulation_steps=2)
    dapo = delta(rows[:2], loss_type="dapo", gradient_accumulation_steps=2)
    first, second = delta(rows[:2], loss_type="dapo"), delta([rows[1], rows[0]], loss_type="dapo")
    for n in bnpo:
        torch.testing.assert_close(bnpo[n], (first[n] + second[n]) / 2, atol=1e-6, rtol=1e-5, msg=n)
    assert max((bnpo[n] - dapo[n]).abs().max() for n in bnpo) > 1e-4  # the two micro-batches' token counts differ


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_update_invariant_to_micro_batch_split(tmp_path, tokenizer, rows, loss_type):
    # one generation batch of 4 problems, split into 1, 2 or 4 micro-batches (gradient accumulation):
    # the optimizer step must be the same, because every normaliser is counted over the whole step
    deltas = [
        sgd_delta(
            tmp_path / f"s{ga}",
            tokenizer,
            rows,
            0,
            per_device_train_batch_size=4 // ga,
            gradient_accumulation_steps=ga,
            loss_type=loss_type,
        )
        for ga in (1, 2, 4)
    ]
    for other in deltas[1:]:
        for n in deltas[0]:
            torch.testing.assert_close(other[n], deltas[0][n], atol=1e-6, rtol=0)
    assert any(d.abs().max() > 0 for d in deltas[0].values())


def test_distillation_term_moves_parameters_on_its_own(tmp_path, tokenizer, rows):
    # with all advantages 0 (constant reward) only the distillation term has a gradient
    def const(prompts, completions, **_):
        return [1.0] * len(completions)

    from sgpo.testing import build_tiny_model

    model = build_tiny_model(tokenizer)
    before = param_snapshot(model)
    args = config(
        tmp_path,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        max_steps=1,
        distill_on="correct",
        instance_weighting="constant",
    )
    FixedRolloutTrainer(model, args=args, processing_class=tokenizer, reward_funcs=[const], train_dataset=rows).train()
    assert changed(before, model)
    # and with distill_coef = 0 nothing moves
    model2 = build_tiny_model(tokenizer)
    before2 = param_snapshot(model2)
    args2 = config(tmp_path / "b", optim="sgd", learning_rate=1.0, max_grad_norm=0.0, max_steps=1, distill_coef=0.0)
    FixedRolloutTrainer(model2, args=args2, processing_class=tokenizer, reward_funcs=[const], train_dataset=rows).train()
    assert not changed(before2, model2)


def test_reuse_over_several_steps_uses_old_logps_and_proximal_mask(tmp_path, tokenizer, tiny_model, rows):
    args = config(
        tmp_path,
        steps_per_generation=2,
        num_iterations=2,
        max_steps=4,
        distill_on="all",
        instance_weighting="constant",
        learning_rate=0.5,
        distill_topk=4,
    )
    trainer = FixedRolloutTrainer(
        tiny_model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows
    )
    trainer.train()
    logs = [m for m in metrics(tmp_path) if "loss" in m]
    # after the first optimizer step the policy has moved: some tokens leave the KL term or get clipped
    assert any(m["distill/masked_frac"] > 0 for m in logs[1:]) or any(m["clip/region"] > 0 for m in logs[1:])


def test_resume_gives_the_same_model(tmp_path, tokenizer, rows):
    from sgpo.testing import build_tiny_model

    common = dict(max_steps=3, distill_on="all", instance_weighting="marginal", instance_weight_ema=0.5, shuffle_dataset=True)
    straight = build_tiny_model(tokenizer)
    FixedRolloutTrainer(
        straight,
        args=config(tmp_path / "a", **common),
        processing_class=tokenizer,
        reward_funcs=[even_answer_reward],
        train_dataset=rows,
    ).train()

    first = build_tiny_model(tokenizer)
    args = config(tmp_path / "b", save_strategy="steps", save_steps=1, **common)
    t1 = FixedRolloutTrainer(first, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows)
    t1.train()
    ckpt = tmp_path / "b" / "out" / "checkpoint-2"
    assert (ckpt / "sgpo_state.json").exists()
    resumed = build_tiny_model(tokenizer, seed=123)  # different init: everything must come from the checkpoint
    t2 = FixedRolloutTrainer(
        resumed, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows
    )
    t2.train(resume_from_checkpoint=str(ckpt))
    assert t2._ema.values == pytest.approx(t1._ema.values)
    for (n, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0, msg=n)


def test_reference_model_kl(tmp_path, tokenizer, tiny_model, rows):
    args = config(tmp_path, beta=0.1, max_steps=2, learning_rate=0.5)
    FixedRolloutTrainer(
        tiny_model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows
    ).train()
    logs = [m for m in metrics(tmp_path) if "loss" in m]
    assert logs[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # policy = reference before the first update
    assert logs[1]["kl"] > 0


# ------------------------------------------------------------------------------------ bad input


def test_reward_function_that_raises_names_function_and_row(tmp_path, tokenizer, tiny_model, rows):
    def fragile(prompts, completions, id, **_):
        if "add-2" in id:
            raise KeyError("boom")
        return [0.0] * len(completions)

    trainer = FixedRolloutTrainer(
        tiny_model,
        args=config(tmp_path, shuffle_dataset=False),
        processing_class=tokenizer,
        reward_funcs=[fragile],
        train_dataset=rows,
    )
    with pytest.raises(
        RewardFunctionError, match=r"reward function 'fragile' raised KeyError: 'boom'; it fails on problem id 'add-2'"
    ):
        trainer.train()


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda prompts, completions, **_: [0.0] * (len(completions) - 1), r"returned \d+ values for \d+ completions"),
        (
            lambda prompts, completions, **_: [float("nan")] + [0.0] * (len(completions) - 1),
            r"returned nan for problem id 'add-0' \(autonomous completion\)",
        ),
        # TRL's rule: None leaves a function out of a completion's reward; every function None is an error
        (lambda prompts, completions, **_: [None] * len(completions), r"^every reward function returned None for problem id"),
    ],
    ids=["wrong_length", "nan", "none"],
)
def test_bad_reward_outputs(tmp_path, tokenizer, tiny_model, rows, bad, match):
    bad.__name__ = "bad_reward"
    match = match if match.startswith("^") else "reward function 'bad_reward' " + match
    trainer = FixedRolloutTrainer(
        tiny_model,
        args=config(tmp_path, shuffle_dataset=False),
        processing_class=tokenizer,
        reward_funcs=[bad],
        train_dataset=rows,
    )
    with pytest.raises(RewardFunctionError, match=match):
        trainer.train()


def test_guided_prompt_too_long_names_the_row(tmp_path, tokenizer, tiny_model, rows):
    rows[5]["strategy"] = " ".join(["add the numbers"] * 60)
    with pytest.raises(
        PromptTooLongError, match=r"1 guided prompt\(s\) exceed max_prompt_length=96: row 5 \(id 'add-5'\) \(\d+ tokens\)"
    ):
        SGPOTrainer(
            tiny_model, args=config(tmp_path), processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows
        )


def test_rows_without_strategy_train_rl_only_and_are_counted(tmp_path, tokenizer, tiny_model, rows, caplog):
    for r in rows[:3]:
        r["strategy"] = None
    rows[3]["strategy"] = ""
    with caplog.at_level(logging.WARNING, logger="sgpo.trainer"):
        trainer = FixedRolloutTrainer(
            tiny_model,
            args=config(tmp_path, shuffle_dataset=False, max_steps=1),
            processing_class=tokenizer,
            reward_funcs=[even_answer_reward],
            train_dataset=rows,
        )
    assert "4 of 8 problems have no usable strategy" in caplog.text
    trainer.train()
    log = [m for m in metrics(tmp_path) if "loss" in m][0]
    assert log["problems/without_strategy_frac"] == 1.0  # the first batch (rows 0, 1) has no strategy
    assert "accuracy/guided" not in log


def test_require_strategy_errors(tmp_path, tokenizer, tiny_model, rows):
    rows[2]["strategy"] = None
    with pytest.raises(DataError, match="row 2: column 'strategy' is empty, and require_strategy is set"):
        SGPOTrainer(tiny_model, args=config(tmp_path, require_strategy=True), processing_class=tokenizer, train_dataset=rows)


def test_tokenizer_without_pad_token_uses_eos(tmp_path, tiny_model, rows):
    from sgpo.testing import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.pad_token = None
    trainer = FixedRolloutTrainer(
        tiny_model,
        args=config(tmp_path, max_steps=1),
        processing_class=tok,
        reward_funcs=[even_answer_reward],
        train_dataset=rows,
    )
    assert tok.pad_token == tok.eos_token
    trainer.train()
    tok2 = build_tiny_tokenizer()
    tok2.pad_token = None
    tok2.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token"):
        SGPOTrainer(tiny_model, args=config(tmp_path), processing_class=tok2, train_dataset=rows)


def test_empty_missing_column_and_too_small_datasets(tmp_path, tokenizer, tiny_model, rows):
    with pytest.raises(DataError, match="empty"):
        SGPOTrainer(tiny_model, args=config(tmp_path), processing_class=tokenizer, train_dataset=[])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x", "answer": "1"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: row 0: missing column 'problem' \(columns found: answer, question\)"):
        SGPOTrainer(tiny_model, args=config(tmp_path), processing_class=tokenizer, train_dataset=str(bad))
    trainer = SGPOTrainer(
        tiny_model,
        args=config(tmp_path, per_device_train_batch_size=16),
        processing_class=tokenizer,
        reward_funcs=[even_answer_reward],
        train_dataset=rows,
    )
    with pytest.raises(DataError, match="train_dataset has 8 problems; one generation batch needs at least 16"):
        trainer.train()


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="SGPOConfig.distill_coef: > 0 needs guided rollouts"):
        SGPOConfig(output_dir=str(tmp_path), num_guided_generations=0)
    with pytest.raises(ValueError, match="SGPOConfig.loss_type"):
        SGPOConfig(output_dir=str(tmp_path), loss_type="ppo")
    with pytest.raises(ValueError, match="SGPOConfig.steps_per_generation"):
        SGPOConfig(output_dir=str(tmp_path), gradient_accumulation_steps=2, steps_per_generation=3)


@pytest.mark.parametrize("loss_type,divergence", [("grpo", "forward_kl"), ("dapo", "reverse_kl"), ("dr_grpo", "imitation")])
def test_chunked_head_matches_plain_and_never_recomputes(tmp_path, tokenizer, rows, monkeypatch, loss_type, divergence):
    # the default (chunked) LM-head path gives the same training as the plain one, and the loss-weight
    # hints the trainer passes are exact: backward never has to recompute the logits (SGD: Adam would
    # amplify float rounding in near-zero gradients into visible differences)
    from sgpo.objectives import chunked_head
    from sgpo.testing import build_tiny_model

    common = dict(
        steps_per_generation=2,
        max_steps=3,
        beta=0.1,
        distill_kl_cap=0.02,
        distill_on="all",
        loss_type=loss_type,
        distill_divergence=divergence,
        instance_weighting="constant",
        learning_rate=0.5,
        optim="sgd",
        head_chunk_size=5,
    )
    finals = {}
    for impl in ("plain", "chunked"):
        if impl == "chunked":

            def fail(*a, **k):
                raise AssertionError("backward recomputed the logits: a loss-weight hint was wrong")

            monkeypatch.setattr(chunked_head, "_weight_grads", fail)
        model = build_tiny_model(tokenizer)
        trainer = FixedRolloutTrainer(
            model,
            args=config(tmp_path / impl, head_implementation=impl, **common),
            processing_class=tokenizer,
            reward_funcs=[even_answer_reward],
            train_dataset=rows,
        )
        trainer.train()
        finals[impl] = param_snapshot(model)
        logs = [m for m in metrics(tmp_path / impl) if "loss" in m]
        assert logs[1]["clip/region"] > 0 and logs[1]["distill/masked_frac"] > 0  # the off-policy step clips and masks
    for n in finals["plain"]:
        torch.testing.assert_close(finals["chunked"][n], finals["plain"][n], atol=2e-5, rtol=1e-4, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("impl", ["plain", "chunked"])
def test_distillation_kl_matches_direct_computation(tmp_path, tokenizer, tiny_model, rows, impl):
    # The logged distill/kl is the mean over distilled tokens of KL(q_t ‖ p_t), with
    # q_t = softmax(model(x ⊕ s ⊕ ỹ_<t)) and p_t = softmax(model(x ⊕ ỹ_<t)): recompute it here from full
    # logits of one unpadded sequence at a time, independently of the trainer's packing, position ids,
    # hidden-state slicing and LM-head path. A one-position misalignment between teacher and student
    # would change every term.
    from conftest import fixed_completion

    with torch.no_grad():  # a random tiny model barely reacts to its context (KL ~1e-4, at float32's
        for p in tiny_model.parameters():  # rounding level): sharpen it so the strategy shifts p_t
            p.mul_(4.0)
    args = config(
        tmp_path,
        per_device_train_batch_size=8,
        max_steps=1,
        distill_on="all",
        instance_weighting="constant",
        learning_rate=0.0,
        head_implementation=impl,
        head_chunk_size=5,
    )
    trainer = FixedRolloutTrainer(
        tiny_model, args=args, processing_class=tokenizer, reward_funcs=[even_answer_reward], train_dataset=rows
    )
    data = trainer.train_dataset
    total, count = 0.0, 0
    with torch.no_grad():
        for row in data:
            for k in range(args.num_guided_generations):
                guided = list(row["_guided_ids"])
                y = fixed_completion(tokenizer, tuple(guided), k)
                for_context = []
                for ctx in (guided, list(row["_prompt_ids"])):
                    ids = torch.tensor([ctx + y])
                    logits = tiny_model(input_ids=ids).logits[0, len(ctx) - 1 : len(ctx) - 1 + len(y)]
                    for_context.append(torch.log_softmax(logits.double(), -1))
                log_q, log_p = for_context
                total += (log_q.exp() * (log_q - log_p)).sum().item()
                count += len(y)
    trainer.train()
    logged = [m for m in metrics(tmp_path) if "loss" in m][0]
    assert logged["distill/tokens"] == count
    assert total / count > 0.05, total / count
    assert logged["distill/kl"] == pytest.approx(total / count, rel=1e-5)


# ------------------------------------------------------------------------------------ run folders and early checks


def test_output_dir_holding_a_run_is_refused_unless_overwritten(tmp_path, tokenizer, rows):
    from sgpo.checkpoints import OutputDirError
    from sgpo.testing import build_tiny_model

    def run(**kw):
        t = FixedRolloutTrainer(
            build_tiny_model(tokenizer),
            args=config(tmp_path, max_steps=1, **kw),
            processing_class=tokenizer,
            reward_funcs=[even_answer_reward],
            train_dataset=rows,
        )
        t.train()

    run()
    first = (tmp_path / "out" / "metrics.jsonl").read_text()
    with pytest.raises(OutputDirError, match=r"already holds a run \(metrics.jsonl\).*--overwrite_output_dir"):
        run()
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == first  # nothing was touched
    run(overwrite_output_dir=True)
    steps = [m["step"] for m in metrics(tmp_path) if "loss" in m]
    assert steps == [1]  # a fresh metrics.jsonl, not two runs mixed


def test_run_folder_keeps_the_resolved_settings(tmp_path, tokenizer, tiny_model, rows):
    import yaml

    trainer = FixedRolloutTrainer(
        tiny_model,
        args=config(tmp_path, max_steps=1, distill_coef=0.5),
        processing_class=tokenizer,
        reward_funcs=[even_answer_reward],
        train_dataset=rows,
    )
    trainer.train()
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["distill_coef"] == 0.5 and saved["num_generations"] == 3 and saved["epsilon_high"] == 0.2
    assert "2 problems per optimizer step per process" in trainer.batch_summary()
    assert "1 optimizer steps" in trainer.batch_summary()


def test_no_problem_with_a_strategy_is_one_clear_error(tmp_path, tokenizer, tiny_model, rows):
    for r in rows:
        r["strategy"] = None
    with pytest.raises(
        DataError,
        match=r"none of the 8 problems has a usable strategy.*--num_guided_generations 0 --distill_coef 0.*sgpo extract",
    ):
        SGPOTrainer(tiny_model, args=config(tmp_path), processing_class=tokenizer, train_dataset=rows)
    # GRPO on the same data is fine
    SGPOTrainer(
        tiny_model,
        args=config(tmp_path, num_guided_generations=0, distill_coef=0.0),
        processing_class=tokenizer,
        train_dataset=rows,
    )


def test_data_is_checked_before_the_model_is_loaded(tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x", "answer": "1"}) + "\n")
    # the model path does not exist: a DataError (not the loader's OSError) shows the data came first
    with pytest.raises(DataError, match="missing column 'problem'"):
        SGPOTrainer(str(tmp_path / "no-such-model"), args=config(tmp_path), processing_class=tokenizer, train_dataset=str(bad))


def test_illegal_numbers_fail_in_the_config(tmp_path):
    with pytest.raises(ValueError, match=r"SGPOConfig.learning_rate: must be ≥ 0"):
        SGPOConfig(output_dir=str(tmp_path), learning_rate=-1e-3)
    with pytest.raises(ValueError, match=r"SGPOConfig.num_generations: must be ≥ 2"):
        SGPOConfig(output_dir=str(tmp_path), num_generations=1)
