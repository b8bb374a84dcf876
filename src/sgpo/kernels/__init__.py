"""Memory-bounded kernels: drop-in replacements for the plain paths in `sgpo.objectives`.

- `chunked_head`  `sampled_logps` and `distill_terms` from hidden states and the LM head, chunk by
                  chunk, with explicit gradients: never holds the N × V logits (same signatures as
                  `sgpo.objectives.lm_head`, plus `chunk_size`)
"""

from sgpo.kernels.chunked_head import DEFAULT_CHUNK_BYTES, default_chunk_size, distill_terms, sampled_logps

__all__ = ["DEFAULT_CHUNK_BYTES", "default_chunk_size", "distill_terms", "sampled_logps"]
