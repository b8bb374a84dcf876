"""The GPU benchmark suite: one command, no downloads, one JSON file and one Markdown table.

    python benchmarks/gpu_suite.py --out runs/gpu_suite          # one H100: ≤ 8 min (--budget-s 450)
    python benchmarks/gpu_suite.py --sizes tiny --device cpu --no-vllm --out /tmp/suite   # the CPU smoke run

Models are built from configs with random weights at real shapes (Qwen2.5-1.5B and Qwen2.5-7B: layers,
widths, heads, vocabulary), in bf16, with a word-level tokenizer of the same vocabulary built here, and
saved once to `--out`/models (vLLM starts from a folder). Parts, per size, in this order:

- trainers: one optimizer step = `--problems` problems × 8 completions × `--completion-tokens` tokens
  (every completion exactly that long: `min_tokens`), 4 micro-steps of 16 completions, gradient
  checkpointing, SGD (no optimizer state, so a 7B model fits beside a colocated vLLM), rollouts from a
  vLLM engine colocated in the training process (`--no-vllm`: Hugging Face `generate`). Columns:
  TRL's `GRPOTrainer` (trl_grpo), our GRPO (grpo), our SGPO with 4 autonomous + 4 guided completions
  per problem, all distilled (sgpo: the same number of rollouts as GRPO), and the same with
  `backward_group_size` (sgpo_grouped). Each in its own process: the median step time after the
  warm-up steps, and the peak GPU memory of the timed steps (torch's allocator, vLLM's KV cache
  included; plus the device's used memory at the end, which counts what torch does not allocate);
- rollout: generated tokens/s of Hugging Face `generate` (as the trainer calls it) and of the colocated
  vLLM engine, `--rollout-sequences` sequences (8 per prompt) × `--completion-tokens` tokens, best of 2;
- kernels: forward + backward of the distillation KL over the full vocabulary at T tokens: our chunked
  head (`sgpo.objectives.chunked_head`, with the loss weights, as the trainer calls it) vs Liger's
  `LigerFusedLinearJSD` (beta = 0: forward KL, teacher ‖ student) when liger-kernel is importable;
  time and peak memory.

Each part runs in a subprocess with what is left of `--budget-s` as its timeout; a part that does not
fit is recorded as skipped, so the whole command stays within the budget. Results: `--out`/gpu_suite.json
(every figure, with the machine, versions and date) and `--out`/gpu_suite.md (the table).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Qwen2.5 shapes (their config.json), and a tiny one for the CPU smoke run
SHAPES: dict[str, dict] = {
    "1.5b": dict(
        vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=32_768, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
    ),
    "7b": dict(
        vocab_size=152_064, hidden_size=3584, intermediate_size=18_944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, tie_word_embeddings=False, max_position_embeddings=32_768, rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
    ),
    "tiny": dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, tie_word_embeddings=True, max_position_embeddings=2048, rope_theta=10_000.0,
        rms_norm_eps=1e-6,
    ),
}  # fmt: skip
TRAINERS = ("trl_grpo", "grpo", "sgpo", "sgpo_grouped")
PARTS = ("trainers", "rollout", "kernels")
GENERATIONS = 8  # completions per problem (GRPO: 8 autonomous; SGPO: 4 + 4)
MICRO_STEPS = 4  # micro-steps per optimizer step (one generation batch)


# ---------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/gpu_suite"), help="folder for the models and the results")
    p.add_argument("--sizes", default="1.5b,7b", help=f"comma-separated model shapes of {', '.join(SHAPES)}")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    p.add_argument("--trainers", default=",".join(TRAINERS), help=f"comma-separated columns of {', '.join(TRAINERS)}")
    p.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the whole suite (default 450)")
    p.add_argument("--device", default=None, help="cuda (default when there is one) or cpu")
    p.add_argument("--dtype", default=None, help="bfloat16 (default on a GPU) or float32 (default on a CPU)")
    p.add_argument("--no-vllm", action="store_true", help="trainers sample with Hugging Face generate; no vLLM rollout column")
    p.add_argument("--problems", type=int, default=8, help="problems per optimizer step (× 8 completions)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--strategy-tokens", type=int, default=64, help="tokens of the strategy in SGPO's guided prompts")
    p.add_argument("--completion-tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps per trainer")
    p.add_argument("--warmup", type=int, default=1, help="optimizer steps before the timed ones (engine start, compilation)")
    p.add_argument("--backward-group-size", type=int, default=4, help="backward_group_size of the sgpo_grouped column")
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--rollout-sequences", type=int, default=128)
    p.add_argument("--kernel-tokens", type=int, default=4096, help="T of the KL kernels")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: a JSON spec of one part
    a = p.parse_args(argv)
    for name, allowed in (("sizes", SHAPES), ("parts", PARTS), ("trainers", TRAINERS)):
        chosen = [x for x in getattr(a, name).split(",") if x]
        unknown = [x for x in chosen if x not in allowed]
        if unknown or not chosen:
            p.error(f"--{name}: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(allowed)}")
        setattr(a, name, chosen)
    for name in ("problems", "prompt_tokens", "completion_tokens", "steps", "rollout_sequences", "kernel_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    import torch

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.dtype = a.dtype or ("bfloat16" if a.device == "cuda" else "float32")
    return a


# ---------------------------------------------------------------------------------------- models and data


def build_tokenizer(vocab_size: int):
    """A word-level tokenizer of `vocab_size` tokens (t3 … t{V-1}; pad 0, EOS 1, unk 2): every id a
    random model samples decodes to a word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def model_config(size: str):
    from transformers import Qwen2Config

    return Qwen2Config(**SHAPES[size], bos_token_id=1, eos_token_id=1, pad_token_id=0)


def build_model(size: str, dtype: str = "float32", device: str = "cpu"):
    """A random-init Qwen2ForCausalLM of the named shape, built directly in `dtype` on `device`."""
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            return Qwen2ForCausalLM(model_config(size)).eval()
    finally:
        torch.set_default_dtype(previous)


def prepare_model(size: str, root: Path, dtype: str, device: str) -> Path:
    """The model folder of `size` (weights + tokenizer), written once under `root`."""
    folder = root / f"qwen2.5-{size}-random-{dtype}"
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    model = build_model(size, dtype, device)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    build_tokenizer(SHAPES[size]["vocab_size"]).save_pretrained(tmp)
    del model
    tmp.rename(folder)
    return folder


def problems(n: int, vocab: int, prompt_tokens: int, strategy_tokens: int, seed: int = 0) -> list[dict]:
    """`n` problems of random words (an answer and a strategy each), in sgpo's data format."""
    import random

    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(f"t{rng.randrange(3, vocab)}" for _ in range(k))

    return [{"id": f"p{i}", "problem": words(prompt_tokens), "answer": "0", "strategy": words(strategy_tokens)} for i in range(n)]


def parity_reward(prompts, completions, **_):
    """1 or 0 by the parity of the completion's character count: non-zero advantages on random text."""
    return [float(len(c) % 2) for c in completions]


# ---------------------------------------------------------------------------------------- workers


def _memory_figures(device: str) -> dict:
    import resource

    out = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        out.update(
            peak_gpu_allocated_gb=round(torch.cuda.max_memory_allocated() / 2**30, 3),
            peak_gpu_reserved_gb=round(torch.cuda.max_memory_reserved() / 2**30, 3),
            gpu_used_at_end_gb=round((total - free) / 2**30, 3),
        )
    return out


def _step_clock(warmup: int, device: str):
    """A callback timing each optimizer step; the GPU's peak-memory counter restarts after the warm-up."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.stamps: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup and device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            if not self.stamps:
                self.stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())

        def step_times(self) -> list[float]:
            return [b - a for a, b in zip(self.stamps, self.stamps[1:])][warmup:]

    return StepClock()


def trainer_worker(spec: dict) -> dict:
    """One trainer column: build it on the model folder, train warmup + steps optimizer steps."""
    import torch
    from transformers import AutoModelForCausalLM

    kind, L, G, device = spec["kind"], spec["completion_tokens"], GENERATIONS, spec["device"]
    folder = Path(spec["model"])
    tokenizer = build_tokenizer(SHAPES[spec["size"]]["vocab_size"])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, spec["dtype"]))
    rows = problems(
        spec["problems"] * (spec["steps"] + spec["warmup"]), len(tokenizer), spec["prompt_tokens"], spec["strategy_tokens"]
    )
    per_micro = spec["problems"] // MICRO_STEPS or 1
    vllm = spec["vllm"]
    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"gpu-suite-{kind}-"),
        max_steps=spec["steps"] + spec["warmup"],
        gradient_accumulation_steps=spec["problems"] // per_micro,
        learning_rate=1e-6,
        optim="sgd",
        max_grad_norm=0.0,
        gradient_checkpointing=True,
        bf16=spec["dtype"] == "bfloat16",
        use_cpu=device == "cpu",
        loss_type="dapo",
        beta=0.0,
        temperature=1.0,
        max_completion_length=L,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        use_vllm=vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=spec["vllm_gpu_memory_utilization"],
        shuffle_dataset=False,
    )
    clock = _step_clock(spec["warmup"], device)
    if kind == "trl_grpo":
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        length = {"min_tokens": L} if vllm else {"min_new_tokens": L}
        args = GRPOConfig(per_device_train_batch_size=per_micro * G, num_generations=G, generation_kwargs=length, **common)
        data = Dataset.from_list([{"prompt": r["problem"]} for r in rows])
        trainer = GRPOTrainer(
            model=model,
            args=args,
            processing_class=tokenizer,
            reward_funcs=[parity_reward],
            train_dataset=data,
            callbacks=[clock],
        )
    else:
        from sgpo.config import SGPOConfig
        from sgpo.trainer import SGPOTrainer

        sgpo = kind.startswith("sgpo")
        args = SGPOConfig(
            per_device_train_batch_size=per_micro,
            num_generations=G // 2 if sgpo else G,
            num_guided_generations=G // 2 if sgpo else 0,
            distill_coef=1.0 if sgpo else 0.0,
            distill_on="all",
            instance_weighting="constant",
            prompt_template="{problem}",
            guided_prompt_template="{problem} {strategy}",
            use_chat_template=False,
            max_prompt_length=None,
            generation_kwargs={"min_new_tokens": L},
            backward_group_size=spec["backward_group_size"] if kind == "sgpo_grouped" else None,
            **common,
        )
        trainer = SGPOTrainer(
            model, args=args, processing_class=tokenizer, reward_funcs=[parity_reward], train_dataset=rows, callbacks=[clock]
        )
    trainer.train()
    times = clock.step_times()
    return {"step_s": round(statistics.median(times), 4), "step_times_s": [round(t, 4) for t in times], **_memory_figures(device)}


def rollout_worker(spec: dict) -> dict:
    """Generated tokens/s of Hugging Face generate (the trainer's HF path) and of the colocated vLLM engine."""
    import torch

    L, S, device = spec["completion_tokens"], spec["rollout_sequences"], spec["device"]
    folder = Path(spec["model"])
    tokenizer = build_tokenizer(SHAPES[spec["size"]]["vocab_size"])
    per_prompt = GENERATIONS
    unique = [
        tokenizer(r["problem"])["input_ids"] for r in problems(max(1, S // per_prompt), len(tokenizer), spec["prompt_tokens"], 0)
    ]
    out: dict = {"sequences": len(unique) * per_prompt, "new_tokens": L}

    def timed(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        gen = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        assert int(gen.completion_mask.sum()) == len(unique) * per_prompt * L, "a completion ended early"
        return len(unique) * per_prompt * L / (time.perf_counter() - t)

    hf = _hf_sampler(folder, spec, tokenizer, unique, per_prompt)
    out["hf_tokens_per_s"] = round(max(timed(hf) for _ in range(2)), 1)
    del hf  # the HF model's memory, before the engine starts
    if spec["vllm"]:
        from sgpo.vllm_engine import ColocatedVLLM, EngineSettings, SamplingSettings

        if device == "cuda":
            torch.cuda.empty_cache()
        engine = EngineSettings(gpu_memory_utilization=spec["vllm_gpu_memory_utilization"], dtype=spec["dtype"])
        with ColocatedVLLM(str(folder), tokenizer, SamplingSettings(max_tokens=L, min_tokens=L), engine) as llm:
            out["vllm_tokens_per_s"] = round(max(timed(lambda: llm.generate(unique, n=per_prompt)) for _ in range(2)), 1)
        out["vllm_vs_hf"] = round(out["vllm_tokens_per_s"] / out["hf_tokens_per_s"], 3)
    return out


def _hf_sampler(folder: Path, spec: dict, tokenizer, unique: list, per_prompt: int):
    """The trainer's HF sampling call on the model of `folder`, each prompt `per_prompt` times (the model
    is freed with the returned function)."""
    import torch
    from transformers import AutoModelForCausalLM

    from sgpo.rollout import generate_completions

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, spec["dtype"])).to(spec["device"]).eval()
    repeated = [p for p in unique for _ in range(per_prompt)]
    L = spec["completion_tokens"]
    return lambda: generate_completions(
        model, tokenizer, repeated, max_new_tokens=L, top_k=0, generation_kwargs={"min_new_tokens": L}
    )


def kernel_worker(spec: dict) -> dict:
    """Forward + backward of Σ_t w_t KL(teacher_t ‖ student_t) over the full vocabulary: chunked vs Liger."""
    import importlib.util

    import torch

    from sgpo.objectives import chunked_head

    shape, T, device = SHAPES[spec["size"]], spec["kernel_tokens"], spec["device"]
    V, H, dtype = shape["vocab_size"], shape["hidden_size"], getattr(torch, spec["dtype"])
    g = torch.Generator(device=device).manual_seed(0)
    weight = (torch.randn(V, H, generator=g, device=device) * 0.02).to(dtype).requires_grad_()
    student = torch.randn(T, H, generator=g, device=device).to(dtype).requires_grad_()
    teacher = torch.randn(T, H, generator=g, device=device).to(dtype)
    targets = torch.randint(V, (T,), generator=g, device=device)
    w = torch.rand(T, generator=g, device=device)

    def chunked():
        terms = chunked_head.distill_terms(student, teacher, weight, targets, loss_weights=lambda rows, terms: w[rows])
        return (terms.divergence * w).sum()

    impls = {"chunked": chunked}
    if importlib.util.find_spec("liger_kernel") is not None and device == "cuda":
        from liger_kernel.transformers import LigerFusedLinearJSD

        jsd = LigerFusedLinearJSD(jsd_beta=0.0, temperature=1.0)  # beta 0: KL(teacher ‖ student)
        impls["liger_jsd"] = lambda: jsd(student, weight, teacher, weight) * T  # its loss is a mean over tokens
    out: dict = {"tokens": T, "vocab": V, "hidden": H, "liger_available": "liger_jsd" in impls}
    for name, fn in impls.items():
        times = []
        for _ in range(3):
            weight.grad = student.grad = None
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if device == "cuda" else 0
            t = time.perf_counter()
            fn().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        out[f"{name}_s"] = round(min(times), 4)
        if device == "cuda":
            out[f"{name}_peak_gb"] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)
    if "liger_jsd_s" in out:
        out["chunked_vs_liger_time"] = round(out["chunked_s"] / out["liger_jsd_s"], 3)
    return out


WORKERS = {"trainer": trainer_worker, "rollout": rollout_worker, "kernels": kernel_worker}


# ---------------------------------------------------------------------------------------- the suite


def run_part(spec: dict, timeout: float, log: Path) -> dict:
    """One part in a fresh process (its own CUDA context and peak counters; a vLLM engine per process)."""
    if timeout < 5:
        return {"skipped": "no time left in --budget-s"}
    with tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False) as f:
        result_file = Path(f.name)
    cmd = [sys.executable, __file__, "--worker", json.dumps({**spec, "result": str(result_file)})]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    t = time.perf_counter()
    try:
        with log.open("a") as out:
            out.write(f"\n===== {json.dumps(spec)}\n")
            out.flush()
            proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"ran past the budget ({timeout:.0f} s left)"}
    wall = round(time.perf_counter() - t, 1)
    if proc.returncode != 0:
        return {"error": f"exit status {proc.returncode} (see {log.name})", "wall_s": wall}
    result = json.loads(result_file.read_text())
    result_file.unlink()
    return {**result, "wall_s": wall}


def environment(args) -> dict:
    import torch

    versions = {}
    for name in ("torch", "transformers", "trl", "vllm", "liger_kernel", "sgpo"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name.replace("_", "-"))
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "cpu_cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "dtype": args.dtype,
        "versions": versions,
        "command": "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }


def run_suite(args) -> dict:
    start = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - start)  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu_suite.log"
    result: dict = {"environment": environment(args), "settings": {}, "sizes": {}}
    shared = {
        k: getattr(args, k)
        for k in ("device", "dtype", "problems", "prompt_tokens", "strategy_tokens", "completion_tokens", "steps", "warmup")
    }
    shared.update(
        vllm=not args.no_vllm,
        backward_group_size=args.backward_group_size,
        vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
        rollout_sequences=args.rollout_sequences,
        kernel_tokens=args.kernel_tokens,
    )
    result["settings"] = shared
    for size in args.sizes:
        t = time.perf_counter()
        folder = prepare_model(size, args.out / "models", args.dtype, args.device)
        entry: dict = {"model_s": round(time.perf_counter() - t, 1), "trainers": {}}
        result["sizes"][size] = entry
        spec = {**shared, "size": size, "model": str(folder)}
        if "trainers" in args.parts:
            for kind in args.trainers:
                entry["trainers"][kind] = run_part({**spec, "part": "trainer", "kind": kind}, left(), log)
            base = entry["trainers"].get("grpo", {}).get("step_s")
            for kind, figures in entry["trainers"].items():
                if base and "step_s" in figures:
                    figures["vs_grpo"] = round(figures["step_s"] / base, 3)
        if "rollout" in args.parts:
            entry["rollout"] = run_part({**spec, "part": "rollout"}, left(), log)
        if "kernels" in args.parts:
            entry["kernels"] = run_part({**spec, "part": "kernels"}, left(), log)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def markdown(result: dict) -> str:
    env, s = result["environment"], result["settings"]
    engine = "vLLM colocated" if s["vllm"] else "HF generate"
    lines = [
        f"GPU suite, {env['date']} on {env['device']} ({env['dtype']}; load average {env['load_avg_1m']}); "
        f"`{env['command']}`; {result['wall_s']} s in all.",
        "",
        f"Trainers: {s['problems']} problems × {GENERATIONS} completions × {s['completion_tokens']} tokens per step, "
        f"rollouts by {engine}; SGPO = 4 autonomous + 4 guided per problem; median of {s['steps']} steps.",
        "",
        "| size | column | step (s) | × our GRPO | peak GPU allocated (GB) | GPU used at end (GB) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]

    def cell(d: dict, key: str) -> str:
        if "skipped" in d or "error" in d:
            return d.get("skipped") or d["error"]
        v = d.get(key)
        return "–" if v is None else str(v)

    for size, entry in result["sizes"].items():
        for kind, d in entry.get("trainers", {}).items():
            lines.append(
                f"| {size} | {kind} | {cell(d, 'step_s')} | {cell(d, 'vs_grpo')} | {cell(d, 'peak_gpu_allocated_gb')} "
                f"| {cell(d, 'gpu_used_at_end_gb')} |"
            )
    lines += ["", "| size | rollout tokens/s: HF generate | vLLM | vLLM / HF |", "| --- | ---: | ---: | ---: |"]
    for size, entry in result["sizes"].items():
        if "rollout" in entry:
            d = entry["rollout"]
            lines.append(f"| {size} | {cell(d, 'hf_tokens_per_s')} | {cell(d, 'vllm_tokens_per_s')} | {cell(d, 'vllm_vs_hf')} |")
    lines += ["", "| size | KL kernel, T tokens | chunked (s) | chunked peak (GB) | Liger JSD (s) | Liger peak (GB) |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for size, entry in result["sizes"].items():
        if "kernels" in entry:
            d = entry["kernels"]
            lines.append(
                f"| {size} | {cell(d, 'tokens')} | {cell(d, 'chunked_s')} | {cell(d, 'chunked_peak_gb')} "
                f"| {cell(d, 'liger_jsd_s') if d.get('liger_available', True) else 'not installed'} | {cell(d, 'liger_jsd_peak_gb')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        out = WORKERS[spec["part"]](spec)
        Path(spec["result"]).write_text(json.dumps(out))
        return None
    result = run_suite(args)
    (args.out / "gpu_suite.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.out / "gpu_suite.md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
