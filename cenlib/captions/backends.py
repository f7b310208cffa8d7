"""What answers a request: an OpenAI-compatible server through the ``openai`` SDK, or the
built-in ``rules`` captioner. Both raise :class:`Fault` with a kind the pool acts on.

Fault kinds and what the pool does with them:

============  ====================================================  =============================
kind          from                                                  pool
============  ====================================================  =============================
rate_limit    429                                                   pause endpoint (Retry-After)
server        5xx                                                   retry, counts for the breaker
timeout       no answer within the endpoint's ``timeout_s``          retry, counts for the breaker
connection    refused, reset or dropped connection                  retry, counts for the breaker
malformed     a 200 whose body is not a valid completion            retry, counts for the breaker
empty         a completion without choices or text                  retry, counts for the breaker
endpoint      401, 403, 404, a missing key: this endpoint is broken  endpoint off for the run
request       400, 413, 422: this request is refused here           try other endpoints only
============  ====================================================  =============================
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from cenlib.captions import costs, rules
from cenlib.captions.limiter import retry_after_seconds
from cenlib.config import EndpointConfig


class Fault(Exception):
    """A failed request: ``kind`` (see the module table), a message naming the endpoint, and the
    wait the server asked for, if any."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


@dataclass(frozen=True)
class Answer:
    content: str
    tokens_in: int | None
    tokens_out: int | None
    latency_s: float


class Backend:
    """One endpoint's way of answering; ``complete`` raises :class:`Fault` on failure."""

    def __init__(self, endpoint: EndpointConfig) -> None:
        self.endpoint = endpoint

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        *,
        seed: int,
        patch_id: str,
    ) -> Answer:
        raise NotImplementedError

    def warm(self) -> None:
        """Get ready to send (imports, client objects) before a send slot is booked."""

    async def aclose(self) -> None:
        return None


class RulesBackend(Backend):
    """The built-in captioner (:mod:`cenlib.captions.rules`): no network, never fails on a
    well-formed prompt of ours. Tokens are counted with cl100k_base, so that the accounting of
    a demo run looks like a paid one (its price is whatever the config says, 0 by default)."""

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        *,
        seed: int,
        patch_id: str,
    ) -> Answer:
        t0 = time.perf_counter()
        try:
            text = rules.answer(messages, None, seed, patch_id)
        except (ValueError, KeyError) as e:
            raise Fault("request", f"rules captioner cannot read this prompt: {e}") from e
        return Answer(
            text,
            costs.message_tokens(messages),
            costs.text_tokens(text),
            time.perf_counter() - t0,
        )


def api_key(endpoint: EndpointConfig) -> str:
    """The endpoint's key from its environment variable (never logged or stored); the local
    SmolLM2 server needs none."""
    if endpoint.kind == "smollm2":
        return "local"
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        raise Fault(
            "endpoint",
            f"environment variable {endpoint.api_key_env} (caption.endpoints[].api_key_env of "
            f"{endpoint.label}) is not set on this worker; export it before starting the "
            "cluster (any value for a local server that needs no key)",
        )
    return key


class OpenAIBackend(Backend):
    """Chat Completions through ``openai.AsyncOpenAI`` (the SDK's own retries are off: the pool
    retries, fails over and paces)."""

    def __init__(self, endpoint: EndpointConfig) -> None:
        super().__init__(endpoint)
        self._client: openai.AsyncOpenAI | None = None

    def _get(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.endpoint.base_url,
                api_key=api_key(self.endpoint),
                max_retries=0,
                timeout=self.endpoint.timeout_s,
            )
            # The SDK imports its resources on first use: do it now, not after a rate slot
            # was booked (a late first send would bunch up with the next ones).
            _ = self._client.chat.completions
        return self._client

    def warm(self) -> None:
        self._get()

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        *,
        seed: int,
        patch_id: str,
    ) -> Answer:
        ep = self.endpoint.label
        client = self._get()
        t0 = time.perf_counter()
        try:
            completion = await client.chat.completions.create(
                model=self.endpoint.model_name,
                messages=list(messages),  # type: ignore[arg-type]
                **dict(params),
            )
        except openai.RateLimitError as e:
            raise Fault("rate_limit", f"{ep} answered 429", _retry_after(e)) from None
        except openai.APITimeoutError:
            raise Fault(
                "timeout", f"{ep} did not answer within {self.endpoint.timeout_s:g} s"
            ) from None
        except openai.APIConnectionError as e:
            raise Fault("connection", f"{ep}: {_cause(e)}") from None
        except openai.APIStatusError as e:
            raise _status_fault(ep, e) from None
        except (json.JSONDecodeError, openai.APIResponseValidationError) as e:
            raise Fault("malformed", f"{ep} sent a body that is not a completion: {e}") from None
        latency = time.perf_counter() - t0
        choices = getattr(completion, "choices", None)
        if not choices:
            raise Fault("empty", f"{ep} sent a completion without choices")
        content = choices[0].message.content if choices[0].message is not None else None
        if not content or not content.strip():
            raise Fault("empty", f"{ep} sent an empty answer")
        usage = completion.usage
        return Answer(
            content,
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
            latency,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _retry_after(e: openai.APIStatusError) -> float | None:
    try:
        return retry_after_seconds(dict(e.response.headers))
    except Exception:
        return None


def _cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    text = f"{type(inner).__name__}: {inner}" if inner is not None else str(e)
    return text[:300]


def _status_fault(ep: str, e: openai.APIStatusError) -> Fault:
    code = e.status_code
    detail = str(e.message)[:300]
    if code >= 500:
        return Fault("server", f"{ep} answered {code}: {detail}", _retry_after(e))
    if code in (401, 403, 404):
        hint = {
            401: "check the key in the environment variable named by api_key_env",
            403: "the key may not use this model",
            404: "check base_url (it usually ends in /v1) and model",
        }[code]
        return Fault("endpoint", f"{ep} answered {code} ({hint}): {detail}")
    if code == 429:
        return Fault("rate_limit", f"{ep} answered 429", _retry_after(e))
    return Fault("request", f"{ep} refused the request with {code}: {detail}")


def make_backend(endpoint: EndpointConfig) -> Backend:
    if endpoint.kind == "rules":
        return RulesBackend(endpoint)
    if not endpoint.base_url:
        raise ValueError(
            f"endpoint {endpoint.label} has no base_url yet (a smollm2 endpoint gets it when the "
            "job starts its server)"
        )
    return OpenAIBackend(endpoint)
