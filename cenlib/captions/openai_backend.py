"""Chat Completions through the ``openai`` SDK: the backend of every OpenAI-compatible
endpoint (OpenAI, vLLM, Ollama, llama.cpp's server, the local SmolLM2), and how its errors map
to the :class:`~cenlib.captions.backends.Fault` kinds the pool acts on (table in
:mod:`cenlib.captions.backends`). Imported when such an endpoint is first used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from cenlib.captions.backends import Answer, Backend, Fault, RequestFacts, api_key
from cenlib.captions.limiter import retry_after_seconds
from cenlib.config import EndpointConfig


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
        facts: RequestFacts | None = None,
    ) -> Answer:
        del seed, patch_id, facts  # a model gets the messages only
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
            getattr(choices[0], "finish_reason", None),
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
