"""Extraction through any OpenAI-compatible chat endpoint, with the official `openai` client.

Works with `vllm serve`, `transformers serve`, SGLang, llama.cpp's server and hosted APIs. The API key
is read from an environment variable (default `OPENAI_API_KEY`) and is never logged, stored or written
to an output; endpoints without authentication (a local `vllm serve`) need none.

Structured output: with `response_format="auto"` the first request asks for `json_schema` (guided
decoding on vLLM / SGLang, structured outputs on hosted APIs); when the endpoint rejects that with HTTP
400/422, or fails on it with a 5xx (vLLM's xgrammar backend answers 500 to schemas it cannot compile),
the same item is asked again at once with `json_object`, then with no `response_format`, and the first
level that works is kept for the rest of the run (logged once). A 5xx at the last level is retried as
below. Servers that ignore the field (e.g.
`transformers serve`) just answer, and the tolerant parser reads the JSON from the text.

Retries (the client's own are turned off, so there is one retry policy): HTTP 429 (honouring
`Retry-After` / `retry-after-ms`), 408, 409, 5xx, timeouts and connection errors are retried with
exponential backoff and jitter (`RetryPolicy`); when the retries are spent the item fails with reason
`rate_limited`, `server_error`, `timeout` or `connection_error`. Other 4xx fail the item
(`http_<code>`), except 401 / 403 / 404 (bad key, no access, unknown model), which stop the run with
`ExtractorConfigError` since every item would fail alike.

Before the first item, `probe` asks the endpoint for its model list once (no retries, 10 s at most):
when nothing listens there (connection refused, unknown host) the run stops at once with one error,
instead of spending every item's retries on it. Any HTTP answer passes the probe (servers without a
model list answer 404); only 401 / 403 stop the run there, as they would on the first item.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Any

from sgpo.strategies.base import ExtractionError, Extractor, ExtractorConfigError, Strategy
from sgpo.strategies.parsing import parse_strategy, snippet
from sgpo.strategies.prompt import DEFAULT_PROMPT_VERSION, get_prompt
from sgpo.strategies.retry import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("auto", "json_schema", "json_object", "none")
_LEVELS = ("json_schema", "json_object", "none")
#: a placeholder sent to endpoints that need no key (the openai client insists on one)
NO_KEY = "EMPTY"


class OpenAICompatExtractor(Extractor):
    """Extracts strategies by chatting with an OpenAI-compatible endpoint. Thread-safe."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 5,
        retry_base: float = 1.0,
        retry_cap: float = 30.0,
        max_retry_after: float = 120.0,
        prompt_version: str = DEFAULT_PROMPT_VERSION,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        response_format: str = "auto",
        extra_body: dict[str, Any] | None = None,
        seed: int | None = None,
    ):
        from openai import OpenAI

        if not model:
            raise ExtractorConfigError("the openai backend needs a model name (--model)")
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.model = model
        self.prompt = get_prompt(prompt_version)
        self.prompt_version = self.prompt.version
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.seed = seed
        self.policy = RetryPolicy(max_retries=max_retries, base=retry_base, cap=retry_cap, max_retry_after=max_retry_after)
        self._level = 0 if response_format == "auto" else _LEVELS.index(response_format)
        self._auto_format = response_format == "auto"
        self._lock = threading.Lock()
        self._rng = random.Random()
        key = os.environ.get(api_key_env) or None
        self._secret = key
        self.api_key_source = f"${api_key_env}" if key else "none"
        self._client = OpenAI(api_key=key or NO_KEY, base_url=base_url, timeout=timeout, max_retries=0)
        self.base_url = str(self._client.base_url)

    # -- request ----------------------------------------------------------------------------------
    def _response_format(self, level: int) -> dict[str, Any] | None:
        kind = _LEVELS[level]
        if kind == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "strategy", "schema": self.prompt.json_schema(), "strict": False},
            }
        if kind == "json_object":
            return {"type": "json_object"}
        return None

    def _scrub(self, text: str) -> str:
        """Error text with the API key (should a server echo it) masked."""
        text = str(text)
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def _create(self, messages: list[dict[str, str]], level: int):
        kwargs: dict[str, Any] = dict(
            model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
        )
        fmt = self._response_format(level)
        if fmt is not None:
            kwargs["response_format"] = fmt
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        return self._client.chat.completions.create(**kwargs)

    def _complete(self, messages: list[dict[str, str]]) -> tuple[str | None, str | None]:
        """(reply text, finish_reason), retrying transient failures; raises `ExtractionError`."""
        import openai

        attempt = 0
        level = self._level
        while True:
            retry_after: float | None = None
            try:
                resp = self._create(messages, level)
                if self._auto_format and level > self._level:
                    with self._lock:
                        if level > self._level:
                            log.warning(
                                "the endpoint rejects response_format=%s; using %s from now on",
                                _LEVELS[self._level],
                                _LEVELS[level],
                            )
                            self._level = level
                break
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if self._auto_format and level < len(_LEVELS) - 1:
                    level += 1  # maybe the endpoint does not support this response_format: try the next
                    continue
                raise ExtractionError(f"http_{exc.status_code}", self._scrub(snippet(exc.message))) from None
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise ExtractorConfigError(
                    f"{self.base_url}: HTTP {exc.status_code} for model {self.model!r} ({self._scrub(snippet(exc.message))}); "
                    f"check --base-url, --model and the API key (read from {self.api_key_source})"
                ) from None
            except openai.RateLimitError as exc:
                reason, detail = "rate_limited", self._scrub(snippet(exc.message))
                retry_after = parse_retry_after(exc.response.headers)
            except openai.APIStatusError as exc:
                code = exc.status_code
                if code >= 500 and self._auto_format and level < len(_LEVELS) - 1:
                    level += 1  # a structured-output backend failing on this format: the next level, no wait
                    continue
                if code >= 500:
                    reason = "server_error"
                elif code in (408, 409):
                    reason = f"http_{code}"
                else:
                    raise ExtractionError(f"http_{code}", self._scrub(snippet(exc.message))) from None
                detail = f"HTTP {code}: {self._scrub(snippet(exc.message))}"
                retry_after = parse_retry_after(exc.response.headers)
            except openai.APITimeoutError:
                reason, detail = "timeout", f"no reply within {self._client.timeout}s"
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                reason, detail = "connection_error", self._scrub(snippet(f"{type(cause).__name__}: {cause}"))
            if attempt >= self.policy.max_retries:
                raise ExtractionError(reason, f"{detail} (gave up after {attempt + 1} attempts)")
            if retry_after is not None and retry_after > self.policy.max_retry_after:
                raise ExtractionError(reason, f"{detail} (the server asks to wait {retry_after:.0f}s > max_retry_after)")
            with self._lock:
                wait = self.policy.delay(attempt, retry_after, self._rng)
            time.sleep(wait)
            attempt += 1
        if not resp.choices:
            raise ExtractionError("empty_response", "the reply has no choices")
        choice = resp.choices[0]
        return choice.message.content, choice.finish_reason

    def probe(self, timeout: float = 10.0) -> None:
        import openai

        try:
            self._client.with_options(timeout=timeout, max_retries=0).models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise ExtractorConfigError(
                f"{self.base_url}: HTTP {exc.status_code} ({self._scrub(snippet(exc.message))}); check the API key "
                f"(read from {self.api_key_source}) and --base-url"
            ) from None
        except openai.APITimeoutError:
            log.warning("%s: no answer to a model-list request within %.0f s; starting anyway", self.base_url, timeout)
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise ExtractorConfigError(
                f"cannot reach {self.base_url} ({self._scrub(snippet(f'{type(cause).__name__}: {cause}'))}); "
                "is the server running? check --base-url"
            ) from None
        except openai.APIStatusError:
            pass  # something answered: the chat requests will tell the rest

    def extract(self, problem: str, response: str, answer: str | None = None) -> Strategy:
        text, finish = self._complete(self.prompt.messages(problem, response, answer))
        return parse_strategy(text, finish)

    def close(self) -> None:
        self._client.close()
