"""The strategy world's prompt format: short templates for a tiny model, same `\\boxed{}` convention.

The default templates of `sgpo.prompts` spend ~30 tokens of instructions per prompt, as much as a
world problem itself; these say the same in a few words. Both prompts go through the tokenizer's
chat template (`sgpo.world.tokenizer` gives it one).
"""

from __future__ import annotations

from sgpo.prompts import PromptFormat

WORLD_TEMPLATE = "{problem}\nanswer in \\boxed{{}} ."
WORLD_GUIDED_TEMPLATE = "{problem}\nstrategy :\n{strategy}\nanswer in \\boxed{{}} ."

WORLD_PROMPT_FORMAT = PromptFormat(template=WORLD_TEMPLATE, guided_template=WORLD_GUIDED_TEMPLATE)
