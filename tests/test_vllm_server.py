"""Server mode for real on CPU: a vLLM OpenAI-compatible server started here as a subprocess on
loopback (`python -m vllm.entrypoints.openai.api_server`, dev mode on, `--logprobs-mode
processed_logprobs`), a tiny Qwen2 (head_dim 32), and `VLLMServerClient` with disk weight pushes.

The NCCL weight push (`weight_sync="nccl"`, TRL's client and vLLM's NCCL weight transfer) needs CUDA
on both sides: its test is skipped on these CPU machines.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import require_vllm
from test_vllm_engine import PROMPTS, TEMPERATURE, gap_to, prompt_ids

require_vllm()

from sgpo.rollout import eos_ids  # noqa: E402
from sgpo.testing import build_vllm_tiny_model  # noqa: E402
from sgpo.vllm_engine import SamplingSettings, VLLMServerClient  # noqa: E402

MAX_TOKENS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("served")
    model = build_vllm_tiny_model(tokenizer, seed=7)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    port = _free_port()
    log = folder / "server.log"
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1", HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="INFO")
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(folder),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(256 * 2**20),
        "--logprobs-mode",
        "processed_logprobs",
    ]
    with open(log, "w") as fh:  # its own process group: the engine core it starts goes down with it
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        sampling = SamplingSettings(
            max_tokens=MAX_TOKENS, temperature=TEMPERATURE, stop_token_ids=tuple(eos_ids(tokenizer, model))
        )
        try:
            client = VLLMServerClient(
                f"http://127.0.0.1:{port}", tokenizer, sampling, timeout=300, weight_sync="disk", weights_dir=folder / "pushed"
            )
        except ConnectionError:
            pytest.fail(f"the vLLM server did not come up:\n{log.read_text()[-3000:]}")
        client.hf_model = model
        yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_server_generation_is_the_trainers_distribution_in_prompt_order(served, tokenizer):
    ids = prompt_ids(tokenizer)
    gen = served.generate(ids, n=[2, 0, 3, 2])
    rows = [r[m.bool()].tolist() for r, m in zip(gen.prompt_ids, gen.prompt_mask)]
    assert rows == [ids[0]] * 2 + [ids[2]] * 3 + [ids[3]] * 2  # two requests (n = 2, n = 3), re-merged in order
    assert gap_to(served.hf_model, gen) < 1e-4
    assert gap_to(served.hf_model, gen, temperature=1.0) > 0.05


def test_disk_weight_push_reaches_the_server(served, tokenizer):
    before = served.hf_model
    after = build_vllm_tiny_model(tokenizer, seed=7)
    after.load_state_dict(before.state_dict())
    opt = torch.optim.Adam(after.parameters(), lr=0.05)
    ids = torch.tensor(prompt_ids(tokenizer, ["what is 3 plus 4 the answer is 7"]))
    after(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    long = [tokenizer("please reason step by step " * 30 + t, add_special_tokens=False)["input_ids"] for t in PROMPTS]
    stale = served.generate(long, n=2)
    assert gap_to(before, stale) < 1e-4 and gap_to(after, stale) > 1e-2
    assert served.sync_weights(after, version=1) is True
    assert served.sync_weights(after, version=1) is False
    assert gap_to(after, served.generate(long, n=2)) < 1e-4
    served.load_weights(before)
    assert gap_to(before, served.generate(long, n=2)) < 1e-4


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="NCCL weight transfer needs CUDA on the trainer and the server (GPU only)"
)
def test_nccl_weight_push_reaches_a_trl_server(tmp_path, tokenizer):  # pragma: no cover - GPU only
    model = build_vllm_tiny_model(tokenizer, seed=7).cuda()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    port = _free_port()
    trl = os.path.join(os.path.dirname(sys.executable), "trl")
    proc = subprocess.Popen(
        [trl, "vllm-serve", "--model", str(tmp_path), "--port", str(port), "--gpu_memory_utilization", "0.2"],
        start_new_session=True,
    )
    try:
        sampling = SamplingSettings(
            max_tokens=MAX_TOKENS, temperature=TEMPERATURE, stop_token_ids=tuple(eos_ids(tokenizer, model))
        )
        client = VLLMServerClient(f"http://127.0.0.1:{port}", tokenizer, sampling, timeout=300, weight_sync="nccl")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        client.load_weights(model)
        gen = client.generate(prompt_ids(tokenizer), n=2)
        assert gap_to(model.cpu(), gen) < 1e-3
        client.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(1)
