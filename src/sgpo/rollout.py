"""Sampling completions with Hugging Face `generate` (left-padded prompts, batched).

The trainer, the evaluator and the strategy scorer all sample through `generate_completions`, so a
prompt is sampled the same way wherever it is used. Its key/value cache (`buffered_cache`) writes each
new position into a buffer allocated once per `generate` call instead of concatenating the whole cache
at every token: the same keys and values, so the same completions (tested), in ~0.7 of the time for
small models on CPU, where the copies dominate (benchmarks/generate_cache.py, docs/performance.md).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Generation:
    """Completions of N prompts.

    prompt_ids / prompt_mask:         (N, P) left-padded
    completion_ids / completion_mask: (N, C) right-padded; the mask covers the tokens up to and
                                      including the first end-of-sequence token
    texts:                            N decoded completions (special tokens skipped)
    sampler_logps:                    (N, C) float32 log-probs of the sampled tokens under the
                                      distribution they were sampled from (temperature, top-k/top-p
                                      applied), 0 at padding; from engines that report them (vLLM,
                                      `sgpo.vllm_engine`), None from Hugging Face `generate`
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    sampler_logps: torch.Tensor | None = None

    @property
    def completion_lengths(self) -> torch.Tensor:  # (N,)
        return self.completion_mask.sum(-1)

    def completion_lists(self) -> list[list[int]]:
        """The token ids of each completion, without padding (EOS included when it ended with one)."""
        lengths = self.completion_lengths.tolist()
        return [self.completion_ids[j, : lengths[j]].tolist() for j in range(len(lengths))]


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (N, L) with L = max(len) or `length`; `side` is "left" or "right"."""
    L = max([len(s) for s in seqs] + [0]) if length is None else length
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            continue
        if side == "left":
            ids[i, L - n :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, L - n :] = 1
        else:
            ids[i, :n] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, :n] = 1
    return ids, mask


def eos_ids(tokenizer, model=None) -> list[int]:
    """All end-of-sequence token ids: the tokenizer's, and the model's generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if eos is not None:
        ids.update([int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])])
    return sorted(ids)


def completion_mask_from_ids(completion_ids: torch.Tensor, eos: Sequence[int]) -> torch.Tensor:
    """(N, C) mask of tokens up to and including the first EOS (all tokens when there is none)."""
    is_eos = torch.isin(completion_ids, torch.as_tensor(list(eos), device=completion_ids.device))
    # number of EOS tokens strictly before each position; keep positions with none before
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (before == 0).long()


@functools.cache
def _buffered_layer_class():
    from transformers.cache_utils import DynamicLayer

    class _BufferedLayer(DynamicLayer):
        """A `DynamicLayer` whose keys and values are views of one buffer of `capacity` positions
        (grown by doubling when a sequence outgrows it): `update` writes the new positions in place
        where `DynamicLayer` concatenates, copying the whole cache at every token. Any operation that
        replaces the tensors (beam reordering, batch selection) is seen by the data pointer and the
        buffer is rebuilt from them."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.get_seq_length()
            need = n + key_states.shape[-2]
            kb = None if self._buffers is None else self._buffers[0]
            if (
                kb is None
                or need > kb.shape[-2]
                or kb.shape[0] != key_states.shape[0]
                or (n > 0 and self.keys.data_ptr() != kb.data_ptr())
            ):
                cap = max(self.capacity, need if need <= self.capacity else 2 * need)
                b, h, _, d = key_states.shape
                kb = key_states.new_empty((b, h, cap, d))
                vb = value_states.new_empty((b, value_states.shape[1], cap, value_states.shape[-1]))
                if n > 0:
                    kb[:, :, :n] = self.keys
                    vb[:, :, :n] = self.values
                self._buffers = (kb, vb)
            kb, vb = self._buffers
            kb[:, :, n:need] = key_states
            vb[:, :, n:need] = value_states
            self.keys, self.values = kb[:, :, :need], vb[:, :, :need]
            return self.keys, self.values

    return _BufferedLayer


def buffered_cache(model, gen_config, capacity: int):
    """The cache `generate` would build by default (a `DynamicCache` from the model's config), with each
    full-attention layer a buffered one (`capacity`: prompt + new tokens); None where `generate` would
    not build a dynamic cache (encoder-decoder or recurrent models, a `cache_implementation` asked for,
    no cache), so that it builds its own."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    config = getattr(model, "config", None)
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    if (
        config is None
        or getattr(config, "is_encoder_decoder", False)
        or supports is None
        or not supports()
        or "mamba" in type(model).__name__.lower()
        or gen_config.cache_implementation not in (None, "dynamic")
        or gen_config.use_cache is False
    ):
        return None
    cache = DynamicCache(config=config.get_text_config(decoder=True))
    if not cache.layers:  # no layer types in the config: left to `generate`
        return None
    layer = _buffered_layer_class()
    cache.layers = [layer(capacity) if type(x) is DynamicLayer else x for x in cache.layers]
    return cache


@torch.no_grad()
def generate_completions(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    generation_kwargs: dict | None = None,
    buffered: bool = True,
) -> Generation:
    """Sample one completion per entry of `prompt_ids` (repeat a prompt to sample it several times).

    `temperature == 0` means greedy decoding. Prompts are processed in chunks of `batch_size`
    (all at once when None) and the results padded to common lengths. `generation_kwargs` are extra
    `GenerationConfig` fields that override the ones above. `buffered=False`: `generate`'s own cache
    (the same completions, slower; benchmarks/generate_cache.py compares the two).
    """
    from transformers import GenerationConfig

    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to the EOS token)")
    eos = eos_ids(tokenizer, model)
    do_sample = temperature > 0
    gen_kwargs = dict(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos or None,
        repetition_penalty=repetition_penalty,
    )
    if do_sample:
        # top_k=0 must reach GenerationConfig as 0: transformers 5 reads None as "unset" and fills in
        # its default top_k=50, which would sample from a truncated distribution while the trainer
        # scores log-probs under the full one
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k or 0)
        if min_p is not None:
            gen_kwargs["min_p"] = min_p
    gen_kwargs.update(generation_kwargs or {})
    gen_config = GenerationConfig(**gen_kwargs)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bs = batch_size or max(1, len(prompt_ids))
    try:
        # inference mode (not just no_grad): ~10% faster decoding on CPU; the outputs leave as lists
        # and are re-padded below, so no inference tensor reaches a later autograd pass
        with torch.inference_mode():
            completions = _generate_chunks(model, tokenizer, prompt_ids, bs, gen_config, eos, device, buffered)
    finally:
        model.train(was_training)
    p_ids, p_mask = pad(prompt_ids, tokenizer.pad_token_id, "left")
    c_ids, c_mask = pad(completions, tokenizer.pad_token_id, "right")
    if c_ids.shape[1] == 0:  # every completion empty: keep one padded column so shapes stay valid
        c_ids, c_mask = pad(completions, tokenizer.pad_token_id, "right", length=1)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    return Generation(p_ids, p_mask, c_ids, c_mask, texts)


def _generate_chunks(
    model, tokenizer, prompt_ids, bs: int, gen_config, eos: list[int], device, buffered: bool = True
) -> list[list[int]]:
    """Completion token lists (EOS kept, padding dropped), `bs` prompts per `generate` call."""
    completions: list[list[int]] = []
    for start in range(0, len(prompt_ids), bs):
        chunk = prompt_ids[start : start + bs]
        ids, mask = pad(chunk, tokenizer.pad_token_id, "left")
        cache = buffered_cache(model, gen_config, ids.shape[1] + (gen_config.max_new_tokens or 0)) if buffered else None
        extra = {} if cache is None else {"past_key_values": cache}
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_config, **extra)
        new = out[:, ids.shape[1] :].cpu()
        keep = completion_mask_from_ids(new, eos) if eos else torch.ones_like(new)
        for row, k in zip(new, keep):
            completions.append(row[: int(k.sum())].tolist())
    return completions
