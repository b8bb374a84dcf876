"""benchmarks/gpu_suite.py on a CPU, so that the GPU suite does not rot between the runs on a GPU: its
arguments, its models at the real shapes (counted on the meta device, no weights), its model folder
and tokenizer at a tiny size, its table, and one end-to-end run at a tiny size."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_suite  # noqa: E402


def test_defaults_are_the_gpu_run():
    a = gpu_suite.parse_args([])
    assert a.sizes == ["1.5b", "7b"] and a.parts == list(gpu_suite.PARTS) and a.trainers == list(gpu_suite.TRAINERS)
    assert a.budget_s <= 8 * 60 and not a.no_vllm
    assert (a.device, a.dtype) == (("cuda", "bfloat16") if torch.cuda.is_available() else ("cpu", "float32"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sizes", "13b"], "--sizes: unknown 13b"),
        (["--parts", "rollout,speed"], "--parts: unknown speed"),
        (["--trainers", ""], "--trainers: unknown (none given)"),
        (["--steps", "0"], "--steps must be ≥ 1"),
    ],
)
def test_bad_arguments_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit):
        gpu_suite.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("size, parameters", [("1.5b", 1_543_714_304), ("7b", 7_615_616_512)])
def test_models_have_the_qwen2_5_shapes(size, parameters):
    # Qwen2.5-1.5B and -7B's parameter counts (tied embeddings in the 1.5B, not in the 7B)
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(gpu_suite.model_config(size))
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_tiny_model_folder_and_tokenizer(tmp_path):
    folder = gpu_suite.prepare_model("tiny", tmp_path, "float32", "cpu")
    assert gpu_suite.prepare_model("tiny", tmp_path, "float32", "cpu") == folder  # written once
    from transformers import AutoModelForCausalLM

    from sgpo.modeling import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = load_tokenizer(str(folder))
    V = gpu_suite.SHAPES["tiny"]["vocab_size"]
    assert model.config.vocab_size == len(tok) == V and model.dtype == torch.float32
    # every id a random model can sample decodes to one word, and back
    ids = list(range(3, V))
    assert tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
    rows = gpu_suite.problems(3, V, prompt_tokens=5, strategy_tokens=2)
    assert len(tok(rows[0]["problem"])["input_ids"]) == 5 and len(rows[0]["strategy"].split()) == 2
    with torch.no_grad():
        assert model(torch.tensor([ids[:7]])).logits.shape == (1, 7, V)


def test_a_part_without_time_left_is_skipped(tmp_path):
    assert gpu_suite.run_part({"part": "kernels"}, timeout=1.0, log=tmp_path / "log") == {"skipped": "no time left in --budget-s"}


def test_the_table_shows_every_figure_and_why_one_is_missing():
    result = {
        "environment": {
            "date": "D",
            "device": "NVIDIA H100",
            "dtype": "bfloat16",
            "load_avg_1m": 0.1,
            "command": "python gpu_suite.py",
        },
        "settings": {"vllm": True, "problems": 8, "completion_tokens": 256, "steps": 3},
        "wall_s": 400.0,
        "sizes": {
            "1.5b": {
                "trainers": {
                    "grpo": {"step_s": 2.0, "vs_grpo": 1.0, "peak_gpu_allocated_gb": 30.5, "gpu_used_at_end_gb": 40.0},
                    "sgpo": {"skipped": "ran past the budget (3 s left)"},
                },
                "rollout": {"hf_tokens_per_s": 900.0, "vllm_tokens_per_s": 9000.0, "vllm_vs_hf": 10.0},
                "kernels": {"tokens": 4096, "chunked_s": 0.1, "chunked_peak_gb": 1.2, "liger_available": False},
            }
        },
    }
    table = gpu_suite.markdown(result)
    assert "| 1.5b | grpo | 2.0 | 1.0 | 30.5 | 40.0 |" in table
    assert "| 1.5b | sgpo | ran past the budget (3 s left) |" in table
    assert "| 1.5b | 900.0 | 9000.0 | 10.0 |" in table
    assert "| 1.5b | 4096 | 0.1 | 1.2 | not installed |" in table
    assert "NVIDIA H100" in table and "vLLM colocated" in table


@pytest.mark.slow
def test_the_suite_runs_end_to_end_at_a_tiny_size(tmp_path):
    # every part, each in its own process as on a GPU; Hugging Face generate instead of vLLM (TRL's
    # colocated vLLM needs a GPU); the SGPO columns with and without grouped backward
    argv = ["--sizes", "tiny", "--device", "cpu", "--no-vllm", "--out", str(tmp_path), "--problems", "4"]
    argv += ["--prompt-tokens", "6", "--strategy-tokens", "3", "--completion-tokens", "6", "--steps", "1", "--warmup", "1"]
    argv += ["--rollout-sequences", "16", "--kernel-tokens", "32", "--backward-group-size", "2", "--budget-s", "900"]
    gpu_suite.main(argv)
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    entry = result["sizes"]["tiny"]
    for kind in gpu_suite.TRAINERS:
        figures = entry["trainers"][kind]
        assert figures["step_s"] > 0 and len(figures["step_times_s"]) == 1, (kind, figures)
        assert figures["peak_rss_gb"] > 0 and "vs_grpo" in figures
    assert entry["rollout"]["hf_tokens_per_s"] > 0 and entry["rollout"]["sequences"] == 16
    assert entry["kernels"]["chunked_s"] > 0 and entry["kernels"]["liger_available"] is False
    assert result["environment"]["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    table = (tmp_path / "gpu_suite.md").read_text()
    assert "| tiny | sgpo_grouped |" in table and "HF generate" in table
