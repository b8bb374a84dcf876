"""Sampling k completions per prompt: Hugging Face `generate` (any device), or vLLM.

`select_backend("auto")` picks vLLM only when it is installed, a CUDA GPU is present and the model is
given as a path (vLLM loads its own copy of the weights); `"vllm"` asks for it on any hardware (its CPU
build runs here, see docs/vllm.md). Everything else goes through `sgpo.rollout.generate_completions`,
the sampler the trainer uses; the vLLM path samples the same way (`sgpo.vllm_engine`). vLLM is
imported lazily.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from sgpo.adapters import merge_adapter
from sgpo.modeling import is_adapter_folder, load_model, load_tokenizer
from sgpo.prompts import tokenize_prompts
from sgpo.rollout import eos_ids, generate_completions
from sgpo.vllm_engine import ColocatedVLLM, EngineSettings, SamplingSettings

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm")


@dataclass
class Completion:
    """One sampled completion: its text, its number of tokens, and whether it ended with an EOS
    token (False: it hit the token limit)."""

    text: str
    num_tokens: int
    finished: bool


def is_generator(obj) -> bool:
    """A generator is any object with `name`, `tokenizer` and `generate(prompts, *, k, temperature,
    top_p, max_new_tokens, seed, add_special_tokens) -> list[list[Completion]]` that is not itself a
    model (`add_special_tokens`: whether the prompt text still needs the tokenizer's own special
    tokens, i.e. it did not go through the chat template)."""
    return all(hasattr(obj, a) for a in ("name", "tokenizer", "generate")) and not hasattr(obj, "parameters")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def select_backend(requested: str, model) -> str:
    """ "hf" or "vllm" for `requested` in BACKENDS; `model` is a path or a loaded model."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown generation backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    is_path = isinstance(model, (str, os.PathLike))
    if requested == "hf":
        return "hf"
    if requested == "vllm":
        problems = []
        if not vllm_installed():
            problems.append("vllm is not installed (`make vllm`, or pip install vllm on a CUDA machine)")
        if not is_path:
            problems.append("the model must be given as a path (vLLM loads its own copy)")
        if problems:
            raise RuntimeError("backend 'vllm' cannot be used: " + "; ".join(problems))
        return "vllm"
    return "vllm" if is_path and vllm_installed() and cuda_available() else "hf"


def load_model_and_tokenizer(path: str | os.PathLike, *, device: str | None = None, dtype: str = "auto"):
    """A causal LM and its tokenizer from a folder (or hub id; a LoRA adapter folder is merged into its
    base), in eval mode, on `device` (default: CUDA when available, else CPU). A tokenizer without a pad token gets its EOS token as pad."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(str(path))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{path}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = load_model(path, dtype=torch_dtype).to(device)  # an adapter folder: its base with the adapter merged in
    model.eval()
    return model, tokenizer


class HFGenerator:
    """k completions per prompt with `generate_completions` (HF generate, left padding)."""

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def generate(
        self,
        prompts: Sequence[str],
        *,
        k: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int | None = None,
        add_special_tokens: bool = False,
    ) -> list[list[Completion]]:
        import torch

        if seed is not None:
            torch.manual_seed(seed)
        ids = tokenize_prompts(self.tokenizer, list(prompts), max_length=None, add_special_tokens=add_special_tokens)
        repeated = [p for p in ids for _ in range(k)]
        gen = generate_completions(
            self.model,
            self.tokenizer,
            repeated,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            batch_size=self.batch_size,
        )
        return grouped_completions(gen, len(prompts), k, eos_ids(self.tokenizer, self.model))


def grouped_completions(gen, num_prompts: int, k: int, eos) -> list[list[Completion]]:
    """k `Completion`s per prompt from a `Generation` whose rows are prompt 0 × k, prompt 1 × k, …"""
    eos = set(eos)
    lengths = gen.completion_lengths.tolist()
    out: list[list[Completion]] = []
    for i in range(num_prompts):
        group = []
        for j in range(i * k, (i + 1) * k):
            n = int(lengths[j])
            last = int(gen.completion_ids[j, n - 1]) if n > 0 else None
            group.append(Completion(gen.texts[j], n, last in eos))
        out.append(group)
    return out


class VLLMGenerator:
    """k completions per prompt with an in-process vLLM engine (`sgpo.vllm_engine.ColocatedVLLM`):
    the same sampling as `HFGenerator` (top-k off, the tokenizer's and the model's EOS tokens), prompts
    given as token ids. `dtype` is the engine's ("auto": as saved); other engine options go to
    `sgpo.vllm_engine.EngineSettings`. With a seed, prompt i is sampled with seed + i."""

    name = "vllm"

    def __init__(self, model_path: str | os.PathLike, tokenizer, dtype: str = "auto", **engine_kwargs):
        from types import SimpleNamespace

        from transformers import GenerationConfig

        self.tokenizer = tokenizer
        self._merged = None

        if is_adapter_folder(model_path):  # vLLM loads model folders: merge the adapter into a temporary one
            import tempfile

            self._merged = tempfile.mkdtemp(prefix="sgpo-merged-")
            model_path = merge_adapter(model_path, self._merged)
        try:  # the model's own end-of-sequence tokens, as HF generate uses them
            gen_config = GenerationConfig.from_pretrained(str(model_path))
        except OSError:
            gen_config = None
        self.eos = tuple(eos_ids(tokenizer, SimpleNamespace(generation_config=gen_config)))
        engine = EngineSettings(dtype=dtype, **engine_kwargs)
        self.engine = ColocatedVLLM(model_path, tokenizer, SamplingSettings(max_tokens=1), engine)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        k: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int | None = None,
        add_special_tokens: bool = False,
    ) -> list[list[Completion]]:
        sampling = SamplingSettings(
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p if temperature > 0 else 1.0,
            stop_token_ids=self.eos,
            seed=seed,
        )
        ids = tokenize_prompts(self.tokenizer, list(prompts), max_length=None, add_special_tokens=add_special_tokens)
        return grouped_completions(self.engine.generate(ids, n=k, sampling=sampling), len(prompts), k, self.eos)

    def close(self) -> None:
        self.engine.close()
        if self._merged is not None:
            import shutil

            shutil.rmtree(self._merged, ignore_errors=True)
            self._merged = None
