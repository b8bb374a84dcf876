"""The LM head and the weights under engines that shard parameters (docs/scaling.md).

SGPO applies the LM head itself: the chunked head (`sgpo.objectives.chunked_head`) reads the head's weight and bias
directly, outside the model's forward. Under an engine that shards parameters that weight is not a
plain full tensor there, so every read goes through `full_lm_head`, which gathers it the way the
engine provides:

- **FSDP2** (`fully_shard`; accelerate `fsdp_version: 2`): parameters are DTensors sharded on dim 0.
  accelerate puts the LM head (with the final norm) in a group that stays unsharded after the
  forward, so right after the student forward the module holds the unsharded parameter: the kernel
  reads it, its gradient lands in it, and FSDP's post-backward reduce-scatters that gradient like
  any other. If the head is sharded at that point (another wrapping), `FSDPModule.unshard()` of the
  group that owns it exposes the unsharded parameter the same way. Without gradient (teacher
  snapshot, old and reference log-probs) `DTensor.full_tensor()` gathers a copy.
- **DeepSpeed ZeRO-3**: parameters are partitioned (they carry `ds_id`) and
  `deepspeed.zero.GatheredParameters` gathers them. With gradient the gather must outlive the
  backward pass — the trainer holds it open for the whole micro-step — and DeepSpeed's gradient
  hooks reduce-scatter the head's full gradient into the partitions. The gather is entered after
  the model's forward: the forward's own release of the head would otherwise partition it again.
- **DDP, ZeRO-1/2, one process**: the parameters are plain full tensors and are used as they are.

`tests/test_sharded.py` checks that FSDP2 and ZeRO-2/3 runs on 2 CPU processes give the 1-process
update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

Tensor = torch.Tensor


def sharding_of(tensor: Tensor | None) -> str:
    """ "zero3" (a DeepSpeed ZeRO-3 partitioned parameter), "fsdp2" (a DTensor) or "none"."""
    if tensor is None:
        return "none"
    if hasattr(tensor, "ds_id"):
        return "zero3"
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return "none"
    return "fsdp2" if isinstance(tensor, DTensor) else "none"


def model_sharding(model: torch.nn.Module) -> str:
    """The sharding of `model`'s parameters: "zero3", "fsdp2" or "none" (the first parameter decides)."""
    return sharding_of(next(iter(model.parameters()), None))


def _fsdp_owner(model: torch.nn.Module, module: torch.nn.Module):
    """The FSDP2 module whose parameter group holds `module`'s parameters: the innermost
    `FSDPModule` on the path from `model` to `module` (inclusive)."""
    from torch.distributed.fsdp import FSDPModule

    path = next((name for name, m in model.named_modules() if m is module), None)
    if path is None:
        raise RuntimeError("the LM head is not a submodule of the model")
    owner = model if isinstance(model, FSDPModule) else None
    parts = path.split(".") if path else []
    for i in range(len(parts)):
        sub = model.get_submodule(".".join(parts[: i + 1]))
        if isinstance(sub, FSDPModule):
            owner = sub
    if owner is None:
        raise RuntimeError("the LM head's weight is a DTensor but no FSDP2 module holds it")
    return owner


@contextlib.contextmanager
def full_lm_head(model: torch.nn.Module, with_grad: bool = False) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(weight (V, H), bias (V,) or None) of `model`'s output embedding, whole, for the duration of
    the block (see the module docstring).

    model: the unwrapped model (not DDP / the DeepSpeed engine). with_grad: the tensors are used in a
    loss whose gradient must reach the parameters; under ZeRO-3 the block must then include the
    backward pass. Without gradient the tensors are for reading only (they may be gathered copies).
    """
    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    kind = sharding_of(weight)
    if kind == "zero3":
        import deepspeed

        params = [p for p in (weight, bias) if p is not None]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield weight, bias
    elif kind == "fsdp2":
        if with_grad:
            _fsdp_owner(model, head).unshard()  # FSDP reshards it in its post-backward
            weight, bias = head.weight, getattr(head, "bias", None)
            if sharding_of(weight) != "none":
                raise RuntimeError("FSDPModule.unshard() left the LM head sharded")
            yield weight, bias
        else:
            with torch.no_grad():
                yield (
                    weight.full_tensor() if sharding_of(weight) == "fsdp2" else weight,
                    bias.full_tensor() if sharding_of(bias) == "fsdp2" else bias,
                )
    else:
        yield weight, bias


@contextlib.contextmanager
def full_weights(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block `model.state_dict()` holds whole tensors under ZeRO-3 (every parameter is
    gathered, as TRL does to push weights to vLLM); FSDP2's DTensors are made whole by
    `to_full`. A no-op for unsharded models."""
    if model_sharding(model) == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
    else:
        yield


def to_full(tensor: Tensor) -> Tensor:
    """A whole tensor: `full_tensor()` of an FSDP2 DTensor (a collective: every process calls it),
    the tensor itself otherwise."""
    return tensor.full_tensor() if sharding_of(tensor) == "fsdp2" else tensor
