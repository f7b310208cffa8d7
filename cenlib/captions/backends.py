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

The ``openai`` SDK and the ``rules`` captioner (with the prompt styles it reads) are imported
when an endpoint of their kind is first used, not with this module: a Dask worker of a rules
run never imports ``openai``, and one of an OpenAI run never imports the prompt styles.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cenlib.captions import costs
from cenlib.config import EndpointConfig
from cenlib.prompts import Facts

RequestFacts = Facts | list[Facts]
"""What a request states, never sent: one patch's facts, or a list for a multi-patch request."""
_Captioner = Callable[[Sequence[Mapping[str, Any]], Mapping[str, Any] | None, int, str], str]


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
    finish_reason: str | None = None  # "length": the answer stopped at max_tokens


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
        facts: RequestFacts | None = None,
    ) -> Answer:
        """Answer ``messages``. ``facts`` (what the prompt states, from the prompt record) is for
        in-process captioners; it is never sent to a model and is not part of the request key."""
        raise NotImplementedError

    def warm(self) -> None:
        """Get ready to send (imports, client objects) before a send slot is booked."""

    async def aclose(self) -> None:
        return None


class RulesBackend(Backend):
    """The built-in captioner (:mod:`cenlib.captions.rules`): no network, never fails on a
    well-formed prompt of ours. It writes from the request's facts; a request without facts (a
    prompts file written before prompt records carried them) is read back from its English, as
    a model would, which gives the same text. Tokens are counted with cl100k_base, so that the
    accounting of a demo run looks like a paid one (its price is whatever the config says, 0 by
    default)."""

    def __init__(self, endpoint: EndpointConfig) -> None:
        super().__init__(endpoint)
        self._answer: _Captioner | None = None

    def warm(self) -> None:
        if self._answer is None:
            from cenlib.captions.rules import answer  # with the prompt styles (module doc)

            costs.text_tokens("")  # loads the token table
            self._answer = answer

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        *,
        seed: int,
        patch_id: str,
        facts: RequestFacts | None = None,
    ) -> Answer:
        t0 = time.perf_counter()
        self.warm()
        assert self._answer is not None
        if isinstance(facts, list):
            if len(facts) != 1:
                raise Fault(
                    "request",
                    f"the rules captioner writes one patch per request; this one has "
                    f"{len(facts)} (set prompt.per_request: 1)",
                )
            facts = facts[0]
        try:
            # Without facts (a prompts file from before they were written) rules.answer reads
            # the statement back from the user message: the same text, from regexes.
            text = self._answer(messages, facts, seed, patch_id)
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


def make_backend(endpoint: EndpointConfig) -> Backend:
    """The backend of one endpoint (``rules``, or an OpenAI-compatible server)."""
    if endpoint.kind == "rules":
        return RulesBackend(endpoint)
    if not endpoint.base_url:
        raise ValueError(
            f"endpoint {endpoint.label} has no base_url yet (a smollm2 endpoint gets it when the "
            "job starts its server)"
        )
    from cenlib.captions.openai_backend import OpenAIBackend

    return OpenAIBackend(endpoint)
