"""What a TRL `GRPOTrainer` user brings, through the public Python API (issue 20): several reward
functions with a designated correctness reward, TRL's data formats (standard and conversational
`prompt`, `solution`), reward functions that return None and read TRL's keyword arguments, and
`SGPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset=..., peft_config=...)` in TRL's
positional order with an `IterableDataset`.

Rollouts are real code everywhere but the sampling itself, which `AnswerTrainer` replaces by a fixed
rule (input injection, as conftest's FixedRolloutTrainer): the k-th autonomous completion of a problem
boxes the right answer when k is even and a wrong one when k is odd; every guided completion boxes the
right answer. So by hand: acc_auto = 1/2, acc_guided = 1, every answer is boxed (format reward 1).
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
import torch

from sgpo.config import SGPOConfig
from sgpo.rollout import Generation, pad
from sgpo.testing import build_tiny_model, tiny_arithmetic_rows
from sgpo.trainer import SGPOTrainer

from conftest import even_answer_reward, text_length_reward


class AnswerTrainer(SGPOTrainer):
    """Autonomous completion k of a problem: `\\boxed{ a+b }` for even k, `\\boxed{ a+b+1 }` for odd k;
    guided ones (the prompt holds the word "strategy"): always `\\boxed{ a+b }`."""

    def _generate(self, prompt_ids):
        tok = self.processing_class
        seen: Counter = Counter()
        completions = []
        for p in prompt_ids:
            words = tok.decode(p).split()
            a, b = [int(w) for w in words if w.isdigit()][:2]
            k = seen[tuple(p)]
            seen[tuple(p)] += 1
            n = a + b if "strategy" in words or k % 2 == 0 else a + b + 1
            completions.append(tok.convert_tokens_to_ids(["the", "answer", "is", "\\boxed{", str(n), "}"]) + [tok.eos_token_id])
        p_ids, p_mask = pad(prompt_ids, tok.pad_token_id, "left")
        c_ids, c_mask = pad(completions, tok.pad_token_id, "right")
        return Generation(p_ids, p_mask, c_ids, c_mask, tok.batch_decode(completions, skip_special_tokens=True))


def config(tmp_path, **kw) -> SGPOConfig:
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        num_generations=4,
        num_guided_generations=2,
        max_completion_length=8,
        max_prompt_length=128,
        learning_rate=1e-3,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        shuffle_dataset=False,
        distill_on="correct",
        instance_weighting="marginal",
    )
    base.update(kw)
    return SGPOConfig(**base)


def first_log(tmp_path) -> dict:
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if "loss" in r)


# ---------------------------------------------------------------------------------------- 1. correctness


def test_a_format_reward_does_not_make_a_wrong_answer_correct(tmp_path, tokenizer):
    # accuracy + boxed_format, the usual TRL set-up: a wrong answer in a box scores 0 + 1, which must
    # not count as correct. acc_auto = 1/2, acc_guided = 1, marginal weight 1/2 (by hand, module doc);
    # counting the total reward (≥ 1 for every boxed answer) gave acc_auto = 1 and weight 0
    trainer = AnswerTrainer(
        build_tiny_model(tokenizer),
        reward_funcs=["accuracy", "boxed_format"],
        args=config(tmp_path),
        train_dataset=tiny_arithmetic_rows(4),
        processing_class=tokenizer,
    )
    trainer.train()
    log = first_log(tmp_path)
    assert log["rewards/boxed_format_reward"] == 1.0
    assert log["rewards/accuracy_reward"] == pytest.approx((4 * 0.5 + 2 * 1.0) / 6)
    assert log["accuracy/auto"] == pytest.approx(0.5) and log["accuracy/guided"] == pytest.approx(1.0)
    assert log["distill/weight_mean"] == pytest.approx(0.5)
    assert log["reward/auto"] == pytest.approx(1.5)  # the reward itself is still the weighted total


def test_correctness_reward_names_the_function_and_the_total_is_a_warned_default(tmp_path, tokenizer, caplog):
    rows = tiny_arithmetic_rows(4)
    # named: the format reward decides (every answer is boxed, so every completion is "correct")
    trainer = AnswerTrainer(
        build_tiny_model(tokenizer),
        reward_funcs=["accuracy", "boxed_format"],
        args=config(tmp_path / "a", correctness_reward="boxed_format_reward"),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    trainer.train()
    assert first_log(tmp_path / "a")["accuracy/auto"] == 1.0
    # two functions, none of them accuracy: the total decides, and a warning at start says so
    with caplog.at_level(logging.WARNING, logger="sgpo.trainer"):
        AnswerTrainer(
            build_tiny_model(tokenizer),
            reward_funcs=[even_answer_reward, text_length_reward],
            args=config(tmp_path / "b"),
            train_dataset=rows,
            processing_class=tokenizer,
        )
    assert "correctness: no 'accuracy' among the reward functions (even_answer_reward, text_length_reward)" in caplog.text
    from sgpo.rewards import RewardSpecError

    with pytest.raises(RewardSpecError, match="correctness_reward 'nope' is not one of the reward functions"):
        AnswerTrainer(
            build_tiny_model(tokenizer),
            reward_funcs=["accuracy"],
            args=config(tmp_path / "c", correctness_reward="nope"),
            train_dataset=rows,
            processing_class=tokenizer,
        )


# ---------------------------------------------------------------------------------------- 4. TRL's data


def trl_rows(conversational: bool) -> list[dict]:
    out = []
    for r in tiny_arithmetic_rows(4):
        prompt = (
            [
                {"role": "system", "content": "put your final answer within a \\boxed{ }"},
                {"role": "user", "content": r["problem"]},
            ]
            if conversational
            else r["problem"]
        )
        out.append({"prompt": prompt, "solution": r["answer"], "strategy": r["strategy"]})
    return out


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_trl_prompt_formats_and_solution_column(tmp_path, tokenizer, caplog, conversational):
    seen = {}

    def spy(prompts, completions, solution, **kw):
        seen.update(prompts=prompts, completions=completions, solution=solution, guided=kw["guided"])
        return [0.0] * len(completions)

    with caplog.at_level(logging.WARNING, logger="sgpo.data"):
        trainer = AnswerTrainer(
            build_tiny_model(tokenizer),
            reward_funcs=["accuracy", spy],
            args=config(tmp_path),
            train_dataset=trl_rows(conversational),
            processing_class=tokenizer,
        )
    assert "no 'answer' column: the answers are TRL's 'solution' column" in caplog.text
    row = trainer.train_dataset[0]
    strategy = "add the first and second numbers then write the result"
    if conversational:  # the chat template with the conversation's own system message, the strategy in the last user turn
        assert row["_prompt_text"] == (
            "<system> put your final answer within a \\boxed{ } </s> <user> what is 0 plus 1 </s> <assistant> "
        )
        assert row["_guided_text"].startswith("<system> put your final answer within a \\boxed{ } </s> <user> what is 0 plus 1")
        assert f"{strategy} </s> <assistant> " in row["_guided_text"]
    else:  # the prompt as given (TRL: no chat template for a standard prompt), the strategy appended
        assert row["_prompt_text"] == "what is 0 plus 1"
        assert row["_guided_text"] == f"what is 0 plus 1\n\nA strategy that solves problems of this kind:\n{strategy}"
    trainer.train()
    log = first_log(tmp_path)
    assert log["accuracy/auto"] == pytest.approx(0.5) and log["accuracy/guided"] == pytest.approx(1.0)  # `solution` is the answer
    # reward functions get the prompts as the data gave them, and TRL's conversational completions
    assert seen["prompts"][0] == trl_rows(conversational)[0]["prompt"]
    first = seen["completions"][0]
    assert first == (
        [{"role": "assistant", "content": "the answer is \\boxed{ 1 }"}] if conversational else "the answer is \\boxed{ 1 }"
    )


def test_bad_conversations_are_one_line_naming_the_row(tmp_path, tokenizer):
    from sgpo.data import DataError

    rows = trl_rows(True)
    bad = [
        (
            [{"role": "system", "content": "no user turn"}],
            r"train_dataset: row 2: column 'prompt': the conversation has no user message",
        ),
        ("a plain string among conversations", r"row 2: column 'prompt': must be a list of messages like row 0's"),
    ]
    for prompt, message in bad:
        rows[2]["prompt"] = prompt
        with pytest.raises(DataError, match=message):
            SGPOTrainer(build_tiny_model(tokenizer), ["accuracy"], config(tmp_path), rows, processing_class=tokenizer)


# ---------------------------------------------------------------------------------------- 5. reward functions


def test_reward_functions_returning_none_are_left_out_for_those_rows(tmp_path, tokenizer):
    # TRL's rule: one function scores the autonomous completions, another the guided ones; each
    # returns None elsewhere. The reward of a completion is the one that applies; the logged mean of a
    # function is over the completions it scored
    def auto_only(prompts, completions, guided, **_):
        return [None if g else 1.0 for g in guided]

    def guided_only(prompts, completions, guided, **_):
        return [0.25 if g else None for g in guided]

    trainer = AnswerTrainer(
        build_tiny_model(tokenizer),
        reward_funcs=[auto_only, guided_only],
        args=config(tmp_path, correctness_reward="auto_only", correct_reward_threshold=0.5),
        train_dataset=tiny_arithmetic_rows(4),
        processing_class=tokenizer,
    )
    trainer.train()
    log = first_log(tmp_path)
    assert log["reward/auto"] == 1.0 and log["reward/guided"] == 0.25
    assert log["rewards/auto_only"] == 1.0 and log["rewards/guided_only"] == 0.25
    # the correctness reward returned None on guided rows: those are not correct
    assert log["accuracy/auto"] == 1.0 and log["accuracy/guided"] == 0.0


def test_reward_functions_get_trl_keyword_arguments(tmp_path, tokenizer):
    calls = []

    def spy(prompts, completions, completion_ids, trainer_state, answer, **_):
        calls.append(
            dict(prompts=list(prompts), completions=list(completions), ids=completion_ids, step=trainer_state.global_step)
        )
        return [0.0] * len(completions)

    trainer = AnswerTrainer(
        build_tiny_model(tokenizer),
        reward_funcs=["accuracy", spy],
        args=config(tmp_path, max_steps=2),
        train_dataset=tiny_arithmetic_rows(4),
        processing_class=tokenizer,
    )
    trainer.train()
    tok = trainer.processing_class
    assert [c["step"] for c in calls] == [0, 1]  # trainer_state: the Trainer's state at the rollout
    first = calls[0]
    # the problem as the data gave it, not the chat-templated prompt
    assert first["prompts"][0] == "what is 0 plus 1" and "<user>" not in first["prompts"][0]
    # completion_ids: the sampled token ids (EOS included), one list per completion, without padding
    assert first["ids"][0] == tok.convert_tokens_to_ids(["the", "answer", "is", "\\boxed{", "1", "}"]) + [tok.eos_token_id]
    assert len(first["ids"]) == len(first["completions"]) == 2 * (4 + 2)


# ---------------------------------------------------------------------------------------- 7. TRL's Python API


def test_trl_positional_order_eval_dataset_peft_config_and_iterable_dataset(tmp_path, tokenizer):
    from datasets import Dataset
    from peft import LoraConfig

    rows = tiny_arithmetic_rows(4)
    iterable = Dataset.from_list(rows).to_iterable_dataset()
    model = build_tiny_model(tokenizer)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    # GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, processing_class, …, peft_config)
    trainer = AnswerTrainer(
        model,
        ["accuracy", "boxed_format"],
        config(tmp_path, per_device_eval_batch_size=2),
        iterable,
        Dataset.from_list(tiny_arithmetic_rows(6)[4:]),
        tokenizer,
        peft_config=lora,
    )
    lora_params = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert lora_params and all("lora_" in n for n in lora_params)  # the given LoraConfig, r = 4
    assert next(v for n, v in lora_params.items() if "lora_A" in n).shape[0] == 4
    trainer.train()
    assert any(not torch.equal(p, lora_params[n]) for n, p in trainer.model.named_parameters() if p.requires_grad)
    metrics = trainer.evaluate()
    # the eval problems (add-4, add-5) sampled by the same rule: acc 1/2 autonomous, 1 guided
    assert metrics["eval_accuracy/auto"] == pytest.approx(0.5) and metrics["eval_accuracy/guided"] == 1.0
    assert metrics["eval_rewards/boxed_format_reward"] == 1.0
    logged = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_reward/auto" in r for r in logged)


def test_chat_template_kwargs_reach_the_chat_template(tmp_path):
    # TRL's chat_template_kwargs (e.g. enable_thinking): extra variables of the tokenizer's template,
    # for both prompts, and saved with the model's prompt format
    from sgpo.prompts import PromptFormat
    from sgpo.testing import CHAT_TEMPLATE, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.chat_template = "{% if greeting %}{{ greeting }} {% endif %}" + CHAT_TEMPLATE
    trainer = SGPOTrainer(
        build_tiny_model(tok),
        ["accuracy"],
        config(tmp_path, chat_template_kwargs='{"greeting": "hello"}'),  # as the command line gives it
        tiny_arithmetic_rows(4),
        processing_class=tok,
    )
    row = trainer.train_dataset[0]
    assert row["_prompt_text"].startswith("hello <user> what is 0 plus 1") and row["_guided_text"].startswith("hello <user>")
    trainer.save_model(str(tmp_path / "saved"))
    assert PromptFormat.from_file(tmp_path / "saved" / "prompt_format.json").chat_template_kwargs == {"greeting": "hello"}
