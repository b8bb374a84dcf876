"""vLLM rollouts: an in-process engine beside the trainer (colocate) or a separately started server.

Both generators sample like `sgpo.rollout.generate_completions` — the same temperature, top-p, top-k
(0 = off), min-p, repetition penalty, token limit and end-of-sequence tokens — and return the same
`sgpo.rollout.Generation`, plus `sampler_logps`: the log-probs of the sampled tokens under the
distribution vLLM sampled them from (its `processed_logprobs` mode: temperature and truncation
applied), which the importance-sampling correction (`sgpo.objectives.importance_sampling`) compares
with the trainer's own log-probs.

    engine = make_vllm_generator(model, tokenizer, args)        # from an SGPOConfig
    gen = engine.generate(prompt_ids, n=[4, 4])                 # rows: prompt 0 × 4, then prompt 1 × 4
    ... optimizer step ...
    engine.sync_weights(model, version=state.global_step)       # pushes only when the version changed

vLLM is imported only when an engine is built: it is an optional dependency (docs/vllm.md; `make test`
installs its CPU build). On a CPU the colocated engine runs in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`), eagerly, with a fixed KV-cache size; the model's head dimension
must be one vLLM's CPU attention supports (32, 64, 80, 96, 112, 128, …).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from sgpo.rollout import Generation, pad
from sgpo.sampling import sampling_kwargs_from_generation_kwargs
from sgpo.sharding import full_weights, model_sharding, to_full

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `make vllm` (the CPU build this project tests with, see docs/vllm.md) "
    "or `pip install vllm` on a CUDA machine"
)
CPU_KV_CACHE_BYTES = 256 * 2**20


def import_vllm():
    """The vllm module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"vLLM rollouts need the vllm package, which cannot be imported ({exc}): {INSTALL_HINT}") from None
    return vllm


# ---------------------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SamplingSettings:
    """What is sampled: the trainer's sampling fields in vLLM's terms.

    `stop_token_ids` are all end-of-sequence ids (`sgpo.rollout.eos_ids`); a completion ends with the
    first one, which it keeps (as the HF path does). `seed`: None samples from the engine's random
    state; an int seeds request i with seed + i (reproducible, e.g. for evaluation; in-process engine
    only).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    @classmethod
    def from_config(cls, args, eos: Sequence[int]) -> SamplingSettings:
        """From an `SGPOConfig` (its `generation_kwargs` override the fields, as on the HF path)."""
        base = cls(
            max_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k or 0,
            min_p=0.0 if args.min_p is None else args.min_p,
            repetition_penalty=args.repetition_penalty,
            stop_token_ids=tuple(eos),
        )
        extra = sampling_kwargs_from_generation_kwargs(args.generation_kwargs or {})
        if "stop_token_ids" in extra:
            extra["stop_token_ids"] = tuple(extra["stop_token_ids"])
        return replace(base, **extra)

    def params(self, n: int, request_index: int = 0):
        """A `vllm.SamplingParams` for `n` samples of one prompt."""
        from vllm import SamplingParams

        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        kwargs["stop_token_ids"] = list(self.stop_token_ids)
        if self.seed is not None:
            kwargs["seed"] = self.seed + request_index
        # logprobs=0: the sampled token's log-prob only; detokenize off: texts are decoded by our tokenizer
        return SamplingParams(n=n, logprobs=0, detokenize=False, **kwargs)

    def request_body(self) -> dict[str, Any]:
        """The same settings as fields of an OpenAI-compatible `/v1/completions` request to vLLM."""
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "seed"}
        body["stop_token_ids"] = list(self.stop_token_ids)
        return body


def _counts(n: int | Sequence[int], num_prompts: int) -> list[int]:
    counts = [n] * num_prompts if isinstance(n, int) else [int(k) for k in n]
    if len(counts) != num_prompts:
        raise ValueError(f"n has {len(counts)} entries for {num_prompts} prompts")
    if any(k < 0 for k in counts):
        raise ValueError(f"n must be ≥ 0 per prompt, got {counts}")
    return counts


def build_generation(
    tokenizer, prompt_ids: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], logps: Sequence[Sequence[float]]
) -> Generation:
    """A `Generation` from one prompt, completion and sampled-token log-prob list per row
    (left-padded prompts, right-padded completions and log-probs, texts decoded without special tokens)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    p_ids, p_mask = pad(prompt_ids, pad_id, "left")
    C = max([len(c) for c in completions] + [1])  # every completion empty: one padded column
    c_ids, c_mask = pad(completions, pad_id, "right", length=C)
    sampler = torch.zeros(c_ids.shape, dtype=torch.float32)
    for i, row in enumerate(logps):
        if row:
            sampler[i, : len(row)] = torch.tensor([math.nan if v is None else float(v) for v in row], dtype=torch.float32)
    texts = tokenizer.batch_decode([list(c) for c in completions], skip_special_tokens=True)
    return Generation(p_ids, p_mask, c_ids, c_mask, texts, sampler_logps=sampler)


# ---------------------------------------------------------------------------------------- weights


def hf_weights(model) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) for every weight of a Hugging Face causal LM, under the checkpoint names vLLM
    loads. With tied embeddings the output embedding is listed too (`named_parameters()` drops it,
    and vLLM samples from a stale head without it). Pass the unwrapped model (not DDP / compiled)."""
    weights = dict(model.state_dict())
    head = model.get_output_embeddings()
    if head is not None:
        name = next((f"{n}.weight" for n, m in model.named_modules() if m is head), None)
        if name is not None and name not in weights:
            weights[name] = head.weight
    return [(k, to_full(v.detach())) for k, v in weights.items()]  # FSDP2: whole tensors (every process calls this)


class _WeightVersion:
    """`sync_weights`: push the weights when they changed since the last push (and only then)."""

    synced_version: Any = None
    num_pushes: int = 0

    def load_weights(self, model) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def sync_weights(self, model, version: Any) -> bool:
        """Push `model`'s weights unless `version` (e.g. the optimizer step) is the one last pushed;
        True when it pushed."""
        if version == self.synced_version:
            return False
        self.load_weights(model)
        self.synced_version = version
        return True


# ---------------------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class EngineSettings:
    """How the in-process engine is built (`SGPOConfig` fields `vllm_*`; None = chosen by hardware)."""

    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    enforce_eager: bool | None = None
    dtype: str = "auto"
    seed: int = 0

    @classmethod
    def from_config(cls, args) -> EngineSettings:
        return cls(
            kv_cache_memory_bytes=args.vllm_kv_cache_memory_bytes,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            tensor_parallel_size=args.vllm_tensor_parallel_size,
            max_model_len=args.vllm_max_model_length,
            enforce_eager=args.vllm_enforce_eager,
            seed=args.seed,
        )

    def llm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM` (the CPU defaults filled in)."""
        on_gpu = torch.cuda.is_available()
        kwargs: dict[str, Any] = dict(
            tensor_parallel_size=self.tensor_parallel_size,
            max_model_len=self.max_model_len,
            enforce_eager=(not on_gpu) if self.enforce_eager is None else self.enforce_eager,
            dtype=self.dtype,
            seed=self.seed,
            disable_log_stats=True,
        )
        if self.kv_cache_memory_bytes is not None or not on_gpu:
            kwargs["kv_cache_memory_bytes"] = self.kv_cache_memory_bytes or CPU_KV_CACHE_BYTES
        else:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        return kwargs


def _match_cpu_threads() -> None:
    """vLLM's CPU attention sizes its work split for one thread count and checks it at every call:
    when torch was set to fewer threads than the cores vLLM binds (`torch.set_num_threads(1)` earlier
    in the process), structured-output requests abort the process ("Check failed: ...thread_num ==
    thread_num (2 vs. 1)"). vLLM takes torch's thread count over once it starts (later
    `torch.set_num_threads` calls are ignored), so set it to the cores this process may use first."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.get_num_threads() != cores:
        logger.info(
            "torch threads %d -> %d for the in-process vLLM engine (its CPU kernels use every core)",
            torch.get_num_threads(),
            cores,
        )
        torch.set_num_threads(cores)


def build_llm(model_path: str | os.PathLike, settings: EngineSettings = EngineSettings(), **extra):
    """A `vllm.LLM` running in this process. The caller's random state is kept: vLLM seeds Python's,
    NumPy's and torch's global generators when it starts in-process."""
    vllm = import_vllm()
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        raise NotImplementedError(
            "an in-process vLLM engine in a run of several processes is not supported yet (docs/vllm.md): "
            "use vllm_mode=server, or one process"
        )
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
        logger.warning(
            "VLLM_ENABLE_V1_MULTIPROCESSING=%s overridden: the colocated engine must run in this process",
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"],
        )
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if not torch.cuda.is_available():
        _match_cpu_threads()
    states = _random_states()
    try:
        return vllm.LLM(model=str(model_path), **{**settings.llm_kwargs(), **extra})
    finally:
        _restore_random_states(states)


def shutdown_llm(llm) -> None:
    """Stop an in-process engine and free what it holds, so that another can start in this process."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    del llm
    gc.collect()
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    destroy_model_parallel()
    destroy_distributed_environment()


def _random_states():
    import numpy as np

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _restore_random_states(states) -> None:
    import numpy as np

    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])
    if states[3] is not None:
        torch.cuda.set_rng_state_all(states[3])


class ColocatedVLLM(_WeightVersion):
    """An in-process vLLM engine that samples like the trainer's HF path.

    model: a folder (save_pretrained output) or an in-memory HF causal LM (saved to a temporary folder
    for the engine to start from; its dtype becomes the engine's unless `engine.dtype` is set).
    tokenizer: the trainer's tokenizer (it decodes the texts; vLLM gets token ids only).
    """

    name = "vllm"

    def __init__(self, model, tokenizer, sampling: SamplingSettings, engine: EngineSettings = EngineSettings()):
        self.tokenizer = tokenizer
        self.sampling = sampling
        self._tmp: str | None = None
        if isinstance(model, (str, os.PathLike)):
            path = str(model)
        else:
            self._tmp = tempfile.mkdtemp(prefix="sgpo-vllm-")
            model.save_pretrained(self._tmp)
            path = self._tmp
            if engine.dtype == "auto":
                engine = replace(engine, dtype=str(model.dtype).removeprefix("torch."))
        try:
            # texts are decoded by `tokenizer`; vLLM needs no tokenizer of its own
            self.llm = build_llm(path, engine, logprobs_mode="processed_logprobs", skip_tokenizer_init=True)
        except BaseException:
            self._remove_tmp()
            raise
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], n: int | Sequence[int] = 1, sampling: SamplingSettings | None = None
    ) -> Generation:
        """Sample n[i] completions of prompt i; rows ordered prompt 0 × n[0], prompt 1 × n[1], …
        (`sampling` overrides the engine's settings for this call)."""
        sampling = sampling or self.sampling
        counts = _counts(n, len(prompt_ids))
        check_context(prompt_ids, counts, sampling.max_tokens, self.max_model_len)
        live = [i for i, k in enumerate(counts) if k]
        requests = [{"prompt_token_ids": list(prompt_ids[i])} for i in live]
        params = [sampling.params(counts[i], request_index=r) for r, i in enumerate(live)]
        outputs = self.llm.generate(requests, params, use_tqdm=False) if requests else []
        rows, completions, logps = [], [], []
        for i, out in zip(live, outputs):
            for o in sorted(out.outputs, key=lambda o: o.index):
                ids = list(o.token_ids)
                rows.append(prompt_ids[i])
                completions.append(ids)
                logps.append([step[t].logprob for step, t in zip(o.logprobs or [], ids)])
        return build_generation(self.tokenizer, rows, completions, logps)

    def load_weights(self, model) -> None:
        """Push `model`'s current weights into the engine (in memory) and drop its prefix cache."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": hf_weights(model)})
        self.llm.reset_prefix_cache()
        self.num_pushes += 1

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            llm, self.llm = self.llm, None
            shutdown_llm(llm)
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_context(prompt_ids: Sequence[Sequence[int]], counts: Sequence[int], max_tokens: int, max_model_len: int) -> None:
    """ValueError naming the first prompt that cannot get `max_tokens` new tokens in the context window
    (vLLM would silently cut its completions short: the HF path has no such limit)."""
    for i, (p, k) in enumerate(zip(prompt_ids, counts)):
        if k and len(p) + max_tokens > max_model_len:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens: with {max_tokens} new tokens it needs a context of "
                f"{len(p) + max_tokens}, more than the engine's {max_model_len} (raise vllm_max_model_length)"
            )


# ---------------------------------------------------------------------------------------- server


class VLLMServerClient(_WeightVersion):
    """Generation through a separately started vLLM server (its OpenAI-compatible `/v1/completions`
    with token-id prompts, as TRL's client does), and weight pushes to it.

    Start the server with `--logprobs-mode processed_logprobs` (what `trl vllm-serve` sets) so that
    `sampler_logps` are those of the sampling distribution; this is checked when the server exposes
    its configuration (`VLLM_SERVER_DEV_MODE=1`).

    weight_sync: "disk" writes the weights as safetensors into `weights_dir` (a folder the server can
    read) and asks the server to reload them (`/collective_rpc` → `reload_weights`, a dev-mode endpoint:
    `VLLM_SERVER_DEV_MODE=1`); works on any hardware. "nccl" streams them over NCCL with TRL's
    `VLLMClient` (server started with `trl vllm-serve`); needs CUDA on both sides.
    """

    name = "vllm-server"

    def __init__(
        self,
        base_url: str,
        tokenizer,
        sampling: SamplingSettings,
        *,
        timeout: float = 240.0,
        weight_sync: str = "disk",
        weights_dir: str | os.PathLike | None = None,
        group_port: int = 51216,
    ):
        if weight_sync not in ("disk", "nccl"):
            raise ValueError(f"weight_sync must be disk or nccl, got {weight_sync!r}")
        if weight_sync == "disk" and weights_dir is None:
            raise ValueError("weight_sync=disk needs a weights_dir the server can read")
        self.base_url = base_url.rstrip("/")
        self.tokenizer, self.sampling = tokenizer, sampling
        self.weight_sync, self.group_port = weight_sync, group_port
        self.weights_dir = None if weights_dir is None else Path(weights_dir)
        self._nccl_client = None
        self._wait_until_up(timeout)
        self.model = self._request("GET", "/v1/models")["data"][0]["id"]
        self._check_server_config()

    # -- HTTP
    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 600.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise RuntimeError(f"vLLM server {self.base_url}{path} answered {exc.code}: {detail}") from None
        return json.loads(raw) if raw.strip() else None

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._request("GET", "/health", timeout=5.0)
                return
            except (urllib.error.URLError, ConnectionError, OSError, RuntimeError) as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no vLLM server answers at {self.base_url} after {timeout:.0f} s ({exc})") from None
                time.sleep(1.0)

    def _check_server_config(self) -> None:
        try:
            info = self._request("GET", "/server_info?config_format=json")
        except RuntimeError:  # no dev-mode endpoints
            if self.weight_sync == "disk":
                raise RuntimeError(
                    f"the vLLM server at {self.base_url} has no dev-mode endpoints, which weight_sync=disk uses: "
                    "start it with VLLM_SERVER_DEV_MODE=1"
                ) from None
            return
        mode = info["vllm_config"]["model_config"].get("logprobs_mode")
        if mode != "processed_logprobs":
            raise RuntimeError(
                f"the vLLM server at {self.base_url} reports {mode} log-probs, not those of its sampling "
                "distribution: start it with --logprobs-mode processed_logprobs"
            )

    # -- generation
    def generate(
        self, prompt_ids: Sequence[Sequence[int]], n: int | Sequence[int] = 1, sampling: SamplingSettings | None = None
    ) -> Generation:
        """As `ColocatedVLLM.generate`: one request per distinct n (the server's n samples per prompt)."""
        sampling = sampling or self.sampling
        if sampling.seed is not None:
            raise ValueError("seeded sampling (SamplingSettings.seed) is supported by the in-process engine only")
        counts = _counts(n, len(prompt_ids))
        by_row: dict[tuple[int, int], tuple[list[int], list[float]]] = {}
        for k in sorted(set(counts) - {0}):
            group = [i for i, c in enumerate(counts) if c == k]
            body = {
                "model": self.model,
                "prompt": [list(prompt_ids[i]) for i in group],
                "n": k,
                "logprobs": 0,
                "return_token_ids": True,
                **sampling.request_body(),
            }
            choices = self._request("POST", "/v1/completions", body)["choices"]
            for choice in choices:  # prompt-major: choice index = position in group · n + sample
                g, j = divmod(int(choice["index"]), k)
                ids = list(choice["token_ids"])
                logps = (choice.get("logprobs") or {}).get("token_logprobs") or [None] * len(ids)
                by_row[(group[g], j)] = (ids, logps)
        rows, completions, logps = [], [], []
        for i, k in enumerate(counts):
            for j in range(k):
                ids, lp = by_row[(i, j)]
                rows.append(prompt_ids[i]), completions.append(ids), logps.append(lp)
        return build_generation(self.tokenizer, rows, completions, logps)

    # -- weights
    def load_weights(self, model) -> None:
        """Push `model`'s current weights to the server and drop its prefix cache."""
        if self.weight_sync == "disk":
            self._load_weights_from_disk(model)
        else:  # pragma: no cover - NCCL needs CUDA on both sides; not testable on the CPU machines
            self._load_weights_nccl(model)
        self._request("POST", "/reset_prefix_cache")
        self.num_pushes += 1

    def _load_weights_from_disk(self, model) -> None:
        from safetensors.torch import save_file

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        # own, contiguous CPU copies: tied weights share storage, which save_file refuses
        tensors = {k: v.to("cpu").contiguous().clone() for k, v in hf_weights(model)}
        tmp = self.weights_dir / "model.safetensors.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, self.weights_dir / "model.safetensors")  # the server never reads a half-written file
        self._request("POST", "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(self.weights_dir)}})

    def _load_weights_nccl(self, model) -> None:  # pragma: no cover - GPU only
        if not torch.cuda.is_available():
            raise RuntimeError("weight_sync=nccl needs a CUDA device (NCCL); use weight_sync=disk on a CPU")
        if self._nccl_client is None:
            from trl.generation.vllm_client import VLLMClient

            self._nccl_client = VLLMClient(base_url=self.base_url, group_port=self.group_port, connection_timeout=30.0)
            self._nccl_client.init_communicator(device=torch.cuda.current_device())
        weights = hf_weights(model)
        metadata = [(k, str(v.dtype).removeprefix("torch."), list(v.shape)) for k, v in weights]
        self._nccl_client.update_named_params(metadata, iter(weights))

    def close(self) -> None:
        if self._nccl_client is not None:  # pragma: no cover - GPU only
            self._nccl_client.close_communicator()
            self._nccl_client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------- from a config


def make_vllm_generator(model, tokenizer, args, eos: Sequence[int]) -> ColocatedVLLM | VLLMServerClient:
    """The generator an `SGPOConfig` asks for (`vllm_mode`), sampling with the config's fields and
    ending completions at `eos` (`sgpo.rollout.eos_ids(tokenizer, model)`).

    colocate: an engine started from `model` (in memory or a folder); server: a client of
    `vllm_server_base_url` (or host:port), its disk weight pushes going to `vllm_server_weights_dir`
    (default OUTPUT_DIR/vllm_weights).
    """
    sampling = SamplingSettings.from_config(args, eos)
    if args.vllm_mode == "colocate":
        return ColocatedVLLM(model, tokenizer, sampling, EngineSettings.from_config(args))
    base_url = args.vllm_server_base_url or f"http://{args.vllm_server_host}:{args.vllm_server_port}"
    weights_dir = args.vllm_server_weights_dir or os.path.join(args.output_dir, "vllm_weights")
    return VLLMServerClient(
        base_url,
        tokenizer,
        sampling,
        timeout=args.vllm_server_timeout,
        weight_sync=args.vllm_server_weight_sync,
        weights_dir=weights_dir,
        group_port=args.vllm_group_port,
    )


def start_vllm(model, tokenizer, args, eos: Sequence[int], version: int) -> ColocatedVLLM | VLLMServerClient:
    """A trainer's engine (`make_vllm_generator`), started at its first rollout at policy `version`
    (the optimizer step). A sharded model starts the engine from its folder and pushes its whole
    weights at once; an unsharded one colocated is the engine's start, so it holds `version` already."""
    sharded = model_sharding(model) != "none"
    engine = make_vllm_generator(model.config._name_or_path if sharded else model, tokenizer, args, eos)
    if args.vllm_mode == "colocate" and not sharded:  # started from the current weights
        engine.synced_version = version
    return engine


def push_weights(engine: ColocatedVLLM | VLLMServerClient, model, version: int, mode: str, accelerator) -> None:
    """Give `engine` the policy's weights when an optimizer step has changed them since the last push
    (a stale engine would sample from an old policy while the loss scores the new one). Every process
    calls it: colocated, each pushes to its own engine; to one server, the main process pushes and the
    others wait for it."""
    if mode == "colocate":
        if engine.synced_version != version:
            with full_weights(model):  # ZeRO-3: gathered on every process (GPU-only, untested here)
                engine.sync_weights(model, version=version)
        return
    if engine.synced_version != version:
        with full_weights(model):
            if accelerator.is_main_process:
                engine.sync_weights(model, version=version)
    accelerator.wait_for_everyone()


__all__ = [
    "ColocatedVLLM",
    "EngineSettings",
    "SamplingSettings",
    "VLLMServerClient",
    "build_generation",
    "build_llm",
    "check_context",
    "hf_weights",
    "import_vllm",
    "make_vllm_generator",
    "push_weights",
    "sampling_kwargs_from_generation_kwargs",
    "shutdown_llm",
    "start_vllm",
]
