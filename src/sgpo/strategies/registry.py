"""Selecting an extractor by name (`openai`, `transformers`, `vllm`, `world`) or by import path
(`package.module:Class`), and building it from a bag of options.

Options are passed to the class's constructor by name, and only those its signature accepts (so one
CLI can drive backends with different needs: a rule-based extractor takes none of `--base-url`,
`--timeout`, ...). Options left at None are not passed, so constructor defaults apply.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from sgpo.strategies.base import Extractor, ExtractorConfigError

BACKENDS: dict[str, str] = {
    "openai": "sgpo.strategies.backends.openai_compat:OpenAICompatExtractor",
    "transformers": "sgpo.strategies.backends.transformers_local:TransformersExtractor",
    "vllm": "sgpo.strategies.backends.vllm_local:VLLMExtractor",
    "world": "sgpo.world.extractor:WorldExtractor",
}


def register_backend(name: str, target: str) -> None:
    """Make `--backend NAME` resolve to `target` (`module:attribute`)."""
    if ":" not in target:
        raise ValueError(f"backend target must look like 'module:Class', got {target!r}")
    BACKENDS[name] = target


def resolve_backend(spec: str) -> Callable[..., Extractor]:
    """The extractor class (or factory) named by `spec`: a registered name or `module:Attribute`."""
    target = BACKENDS.get(spec, spec)
    if ":" not in target:
        raise ExtractorConfigError(
            f"unknown backend {spec!r}: use one of {', '.join(BACKENDS)} or an import path 'package.module:Class'"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExtractorConfigError(f"backend {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ExtractorConfigError(f"backend {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj) and not issubclass(obj, Extractor):
        raise ExtractorConfigError(f"backend {spec!r}: {target} is not a subclass of sgpo.strategies.Extractor")
    if not callable(obj):
        raise ExtractorConfigError(f"backend {spec!r}: {target} is not a class or factory")
    return obj


def accepted_options(factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The options (not None) that `factory`'s signature accepts; all of them if it takes **kwargs."""
    options = {k: v for k, v in options.items() if v is not None}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}


def build_extractor(spec: str, strict_options: dict[str, Any] | None = None, **options: Any) -> Extractor:
    """An extractor instance: `build_extractor("openai", model="m", base_url="http://...")`.

    `options` the constructor does not accept are dropped (shared CLI options); `strict_options` (e.g.
    `--backend-arg`) must all be accepted, or a clear error names the ones that are not."""
    factory = resolve_backend(spec)
    kwargs = accepted_options(factory, options)
    if strict_options:
        taken = accepted_options(factory, strict_options)
        unknown = sorted(set(strict_options) - set(taken))
        if unknown:
            raise ExtractorConfigError(f"backend {spec!r} takes no option(s) {', '.join(unknown)}")
        kwargs.update(taken)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:  # e.g. a required option (--model) is missing
        raise ExtractorConfigError(f"backend {spec!r}: {exc} (options given: {', '.join(sorted(kwargs)) or 'none'})") from None
    except ValueError:  # no signature to check (a builtin): let the call decide
        pass
    extractor = factory(**kwargs)
    if not isinstance(extractor, Extractor):
        raise ExtractorConfigError(f"backend {spec!r} built a {type(extractor).__name__}, not an Extractor")
    return extractor
