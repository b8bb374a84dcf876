"""Extraction with an in-process vLLM engine (optional dependency: `make vllm` installs the CPU
build this project tests with, `pip install vllm` on a CUDA machine).

vLLM is imported only when this backend is built; without it the run stops at once with an
`ExtractorConfigError` that says how to install it. Items are generated in batches through
`LLM.chat` with JSON-schema guided decoding (`StructuredOutputsParams` on vLLM >= 0.11,
`GuidedDecodingParams` on older releases). The engine is built like the trainer's
(`sgpo.vllm_engine.build_llm`): in this process, and on a CPU eagerly with a fixed KV cache
(`kv_cache_memory_bytes`, default 256 MiB there). `tests/test_vllm_eval_extract.py` runs it on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sgpo.strategies.base import BatchExtractor, ExtractionError, ExtractionRequest, ExtractorConfigError, Strategy
from sgpo.strategies.parsing import parse_replies
from sgpo.strategies.prompt import DEFAULT_PROMPT_VERSION, get_prompt
from sgpo.vllm_engine import EngineSettings, build_llm, shutdown_llm

INSTALL_HINT = "`make vllm` (CPU) or pip install 'sgpo[vllm]' on a CUDA machine, or use --backend openai against `vllm serve`"


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ExtractorConfigError(
            f"the vllm backend needs the vllm package, which is not installed ({exc}): {INSTALL_HINT}"
        ) from None
    return vllm


def _sampling_params(vllm, schema: dict[str, Any] | None, temperature: float, max_tokens: int):
    kwargs: dict[str, Any] = dict(temperature=temperature, max_tokens=max_tokens)
    if schema is not None:
        try:  # vLLM >= 0.11
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(json=schema)
        except ImportError:  # older releases
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(json=schema)
    return vllm.SamplingParams(**kwargs)


class VLLMExtractor(BatchExtractor):
    """`VLLMExtractor("Qwen/Qwen2.5-7B-Instruct", tensor_parallel_size=2)` (engine options go to `vllm.LLM`)."""

    name = "vllm"
    max_concurrency = 1

    def __init__(
        self,
        model: str,
        *,
        prompt_version: str = DEFAULT_PROMPT_VERSION,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        batch_size: int = 256,
        guided: bool = True,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        trust_remote_code: bool = False,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool | None = None,
    ):
        vllm = _import_vllm()

        if not model:
            raise ExtractorConfigError("the vllm backend needs a model path or hub id (--model)")
        self.model = str(model)
        self.prompt = get_prompt(prompt_version)
        self.prompt_version = self.prompt.version
        self.batch_size = batch_size
        engine = EngineSettings(
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            dtype=dtype,
            seed=seed,
        )
        self.llm = build_llm(self.model, engine, trust_remote_code=trust_remote_code)
        self.params = _sampling_params(vllm, self.prompt.json_schema() if guided else None, temperature, max_tokens)

    def extract_batch(self, items: Sequence[ExtractionRequest]) -> list[Strategy | ExtractionError]:
        conversations = [self.prompt.messages(it.problem, it.response, it.answer) for it in items]
        outputs = self.llm.chat(conversations, self.params, use_tqdm=False)
        # an empty completion list (should not happen) reads as an empty reply
        return parse_replies((o.outputs[0].text, o.outputs[0].finish_reason) if o.outputs else (None, None) for o in outputs)

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            llm, self.llm = self.llm, None
            shutdown_llm(llm)
