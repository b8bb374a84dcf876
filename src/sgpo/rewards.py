"""Reward functions with TRL's signature `f(prompts, completions, **kwargs) -> list[float | None]`.

What a function gets, as TRL's `GRPOTrainer` gives it: `prompts`, the prompts as the data set gave
them (TRL's `prompt` column: a string, or a list of messages; else the `problem` text), never the
chat-templated string; `completions`, the texts (for conversational data TRL's
`[{"role": "assistant", "content": text}]`); `completion_ids`, the sampled token ids; `trainer_state`,
the Trainer's state; every data set column as a keyword list aligned with the completions (e.g.
`answer`, `id`); and ours, `guided` (whether the completion was sampled with the strategy in its
prompt). A function may return None for a completion it does not apply to: it is left out of that
completion's reward (TRL's rule); every function returning None for one completion is an error.

Recipes name reward functions by registry name (`accuracy`, or `accuracy_reward`, the name its
metric is logged under), `module:function` or TRL's `module.function` (found from the current folder
too), or `path/to/file.py:function`. `RewardFunctions` calls them on a batch of completions (the
trainer's "score" phase), turns any failure into a `RewardFunctionError` naming the function and the
row, and knows which function decides correctness (`correctness_reward`).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sgpo.answers import extract_boxed
from sgpo.data import INTERNAL_COLUMNS, PROMPT_GIVEN
from sgpo.verify import default_verifier

RewardFunc = Callable[..., list[float]]


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned the wrong number of values, or a NaN, or every function
    returned None for one completion."""


class RewardSpecError(ValueError):
    """A reward function that cannot be found or loaded, or reward settings that do not fit the
    functions (`reward_weights`, `correctness_reward`); the message is one line."""


def completion_text(completion: Any) -> str:
    """The text of a completion: itself, or the content of the last message of TRL's conversational form."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def accuracy_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **_) -> list[float]:
    """1.0 when the last `\\boxed{}` of the completion equals the gold `answer` (math-verify), else 0.0."""
    checks = default_verifier().check([completion_text(c) for c in completions], [str(a) for a in answer])
    return [1.0 if c.correct else 0.0 for c in checks]


def boxed_format_reward(prompts: Sequence[Any], completions: Sequence[Any], **_) -> list[float]:
    """1.0 when the completion has a final `\\boxed{...}` answer, else 0.0."""
    return [0.0 if extract_boxed(completion_text(c)) is None else 1.0 for c in completions]


REWARD_FUNCS: dict[str, RewardFunc] = {
    "accuracy": accuracy_reward,
    "boxed_format": boxed_format_reward,
}
#: the default correctness reward, when it is among a run's reward functions
CORRECTNESS_DEFAULT = "accuracy"


def _registered(name: str) -> RewardFunc | None:
    """A registry function by its registry name or its function name (`accuracy_reward`)."""
    if name in REWARD_FUNCS:
        return REWARD_FUNCS[name]
    return next((fn for fn in REWARD_FUNCS.values() if fn.__name__ == name), None)


def _known() -> str:
    names = [n for k, fn in REWARD_FUNCS.items() for n in (k, fn.__name__)]
    return f"known: {', '.join(names)}; or give module:function, module.function or file.py:function"


def _from_file(spec: str, path: str, attr: str) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise RewardSpecError(f"reward function {spec!r}: no such file {str(file)!r}")
    name = f"sgpo_reward_file_{abs(hash(str(file.resolve())))}"
    module = sys.modules.get(name)
    if module is None:
        loader = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any error of the user's file, in one line
            raise RewardSpecError(f"reward function {spec!r}: {file} fails to import: {type(exc).__name__}: {exc}") from None
        sys.modules[name] = module
    if not hasattr(module, attr):
        raise RewardSpecError(f"reward function {spec!r}: {file} has no {attr!r}")
    return getattr(module, attr)


def _from_module(spec: str, module_name: str, attr: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:  # a module of the current folder is found without PYTHONPATH=. (as TRL's script does)
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        raise RewardSpecError(
            f"reward function {spec!r}: module {module_name!r} cannot be imported ({type(exc).__name__}: {exc})"
        ) from None
    if not hasattr(module, attr):
        raise RewardSpecError(f"reward function {spec!r}: module {module_name!r} has no {attr!r}")
    return getattr(module, attr)


def resolve_reward_func(spec: str | RewardFunc) -> RewardFunc:
    """A reward function from a callable, a registry name (or its function name), `module:function`,
    TRL's `module.function`, or `path/to/file.py:function`. Raises `RewardSpecError` (one line)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise RewardSpecError(f"reward function {spec!r}: expected a name, module:function or file.py:function")
    spec = spec.strip()
    fn = _registered(spec)
    if fn is not None:
        return fn
    if ":" in spec:
        target, _, attr = spec.rpartition(":")
        fn = _from_file(spec, target, attr) if target.endswith(".py") else _from_module(spec, target, attr)
    elif "." in spec:
        module_name, _, attr = spec.rpartition(".")
        fn = _from_module(spec, module_name, attr)
    else:
        raise RewardSpecError(f"unknown reward function {spec!r}; {_known()}")
    if not callable(fn):
        raise RewardSpecError(f"reward function {spec!r} is not callable")
    return fn


def reward_func_name(fn: RewardFunc) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class RewardFunctions:
    """The reward functions of a run and their weights: `funcs` (resolved by `resolve_reward_func`),
    `names`, `weights` (n_funcs,) float32 (all 1 when None), and `correctness_index`: the function
    whose value decides whether a completion is correct (None: the weighted total decides).

    `correctness` names it (a registry or function name, as logged under `rewards/NAME`); None picks
    `accuracy` when it is among the functions, else the only function, else the total, with a note
    in `correctness_note` (the trainer warns with it)."""

    def __init__(
        self,
        specs: Sequence[str | RewardFunc] | str | RewardFunc,
        weights: Sequence[float] | None = None,
        correctness: str | None = None,
    ):
        if isinstance(specs, str) or callable(specs):
            specs = [specs]
        self.funcs: list[RewardFunc] = [resolve_reward_func(f) for f in specs]
        if not self.funcs:
            raise RewardSpecError("at least one reward function is needed")
        self.names = [reward_func_name(f) for f in self.funcs]
        weights = weights if weights is not None else [1.0] * len(self.funcs)
        if len(weights) != len(self.funcs):
            raise RewardSpecError(
                f"reward_weights has {len(weights)} value(s) for {len(self.funcs)} reward function(s) ({', '.join(self.names)})"
            )
        self.weights = torch.tensor(weights, dtype=torch.float32)
        self.correctness_index, self.correctness_note = self._correctness(correctness)

    def _correctness(self, name: str | None) -> tuple[int | None, str | None]:
        if name is not None:
            wanted = _registered(name)
            for k, (fn, fn_name) in enumerate(zip(self.funcs, self.names)):
                if fn_name == name or (wanted is not None and fn is wanted):
                    return k, None
            raise RewardSpecError(f"correctness_reward {name!r} is not one of the reward functions ({', '.join(self.names)})")
        default = REWARD_FUNCS[CORRECTNESS_DEFAULT]
        if default in self.funcs:
            return self.funcs.index(default), None
        if len(self.funcs) == 1:
            return 0, None
        return None, (
            f"correctness: no {CORRECTNESS_DEFAULT!r} among the reward functions ({', '.join(self.names)}), so a completion "
            "counts as correct (accuracies, instance weights, distill_on) when its weighted total reward is at least "
            "correct_reward_threshold; name the function that decides it with correctness_reward"
        )

    @property
    def correctness_name(self) -> str:
        return "total reward" if self.correctness_index is None else self.names[self.correctness_index]

    def correct_values(self, total: torch.Tensor, per_func: torch.Tensor) -> torch.Tensor:
        """(n,) the value compared with correct_reward_threshold: the correctness function's (NaN where
        it returned None: not correct), or the weighted total."""
        return total if self.correctness_index is None else per_func[:, self.correctness_index]

    def __call__(
        self,
        completions: list[Any],
        rows: list[dict[str, Any]],
        guided: list[bool],
        completion_ids: list[list[int]] | None = None,
        trainer_state: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted sum (n,), each function's rewards (n, n_funcs), NaN where a function returned
        None) of the n completions; `rows[j]` is the data set row of completion j: its prompt as given
        is `prompts[j]`, its columns (but the `INTERNAL_COLUMNS`) reach the functions as keyword lists,
        with `guided`, `completion_ids` and `trainer_state`. Errors name the function and the row."""
        keys = [k for k in rows[0] if k not in INTERNAL_COLUMNS]
        columns: dict[str, Any] = {k: [r[k] for r in rows] for k in keys}
        columns["guided"] = list(guided)
        columns["prompts"] = [r[PROMPT_GIVEN] if PROMPT_GIVEN in r else r["problem"] for r in rows]
        columns["completions"] = list(completions)
        columns["completion_ids"] = [list(c) for c in completion_ids] if completion_ids is not None else None

        def describe(j: int) -> str:
            kind = "guided" if guided[j] else "autonomous"
            return f"problem id {rows[j]['id']!r} ({kind} completion)"

        per_func = torch.zeros(len(completions), len(self.funcs))
        for f_idx, (fn, name) in enumerate(zip(self.funcs, self.names)):
            values = self._call_one(fn, name, columns, trainer_state, describe)
            per_func[:, f_idx] = torch.tensor([math.nan if v is None else float(v) for v in values])
        unscored = torch.isnan(per_func).all(dim=1)
        if unscored.any():
            j = int(unscored.nonzero()[0])
            raise RewardFunctionError(
                f"every reward function returned None for {describe(j)}: at least one must score each completion "
                f"({', '.join(self.names)})"
            )
        return (per_func * self.weights).nansum(dim=1), per_func

    @staticmethod
    def _call_one(fn, name: str, columns: dict[str, list], trainer_state, describe) -> list:
        """`fn`'s values for every completion, checked: one per completion, numbers or None."""
        n = len(columns["completions"])
        t_call = time.perf_counter()
        try:
            values = fn(trainer_state=trainer_state, **columns)
        except Exception as exc:
            culprit = ""
            # find the first row that fails on its own — unless the call was slow to fail (a broken
            # service, not a bad row): then retrying row by row would only multiply the wait
            rows_to_try = range(n) if time.perf_counter() - t_call < 5.0 else range(0)
            for j in rows_to_try:
                try:
                    fn(trainer_state=trainer_state, **{k: v if v is None else v[j : j + 1] for k, v in columns.items()})
                except Exception:  # noqa: BLE001
                    culprit = f"; it fails on {describe(j)}"
                    break
            raise RewardFunctionError(f"reward function {name!r} raised {type(exc).__name__}: {exc}{culprit}") from exc
        values = list(values) if values is not None else []
        if len(values) != n:
            raise RewardFunctionError(f"reward function {name!r} returned {len(values)} values for {n} completions")
        for j, v in enumerate(values):
            if v is not None and (not isinstance(v, (int, float)) or math.isnan(float(v))):
                raise RewardFunctionError(f"reward function {name!r} returned {v!r} for {describe(j)}")
        return values
