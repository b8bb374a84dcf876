"""One SGD step of SGPO with fixed rollouts; the main process saves the parameter update (= lr·grad).

Run directly (one process) or with `accelerate launch --cpu --num_processes 2` (gloo): the update
must be the same, because every loss normaliser is counted over all processes.
usage: one_step_update.py OUT_FILE PER_DEVICE_BATCH_SIZE LOSS_TYPE
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (conftest helpers)

from conftest import FixedRolloutTrainer, even_answer_reward  # noqa: E402
from sgpo.config import SGPOConfig  # noqa: E402
from sgpo.testing import build_tiny_model, build_tiny_tokenizer, tiny_arithmetic_rows  # noqa: E402


def main(out: str, per_device: int, loss_type: str) -> None:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SGPOConfig(
        output_dir=str(Path(out).parent / "run"),
        per_device_train_batch_size=per_device,
        num_generations=3,
        num_guided_generations=2,
        max_completion_length=10,
        loss_type=loss_type,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        weight_decay=0.0,
        max_steps=1,
        shuffle_dataset=False,
        distill_on="all",
        instance_weighting="constant",
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    trainer = FixedRolloutTrainer(model, args, processing_class=tokenizer, reward_funcs=[even_answer_reward],
                                  train_dataset=tiny_arithmetic_rows(8))
    trainer.train()
    if trainer.is_world_process_zero():
        torch.save({n: before[n] - p.detach() for n, p in model.named_parameters()}, out)
        print(f"processes={trainer.accelerator.num_processes}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
