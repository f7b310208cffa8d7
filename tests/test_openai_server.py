"""The fake OpenAI server the caption pool is tested against, checked with the real SDK."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai_server import (
    FAULTS,
    FakeOpenAI,
    echo_responder,
    fetch_log,
    max_in_window,
    message_hash,
    random_faults,
)

KEY = "sk-test"


def _server_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("FakeOpenAI") or "process_request_thread" in t.name
    ]


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    yield
    assert _server_threads() == []


def messages(text: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "Describe the land cover."},
        {"role": "user", "content": text},
    ]


def client(fake: FakeOpenAI, timeout: float = 5.0, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=key, max_retries=0, timeout=timeout)


def ask(c: openai.OpenAI, text: str = "patch 1") -> Any:
    return c.chat.completions.create(model="gpt-test", messages=messages(text))


def test_completion_parses_and_is_recorded() -> None:
    with FakeOpenAI() as fake, client(fake) as c:
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert fake.base_url.endswith("/v1")
        resp = ask(c, "patch 1")
        assert resp.object == "chat.completion"
        assert resp.id.startswith("chatcmpl-")
        assert resp.model == "gpt-test"
        assert resp.created > 0
        [choice] = resp.choices
        assert choice.index == 0
        assert choice.finish_reason == "stop"
        assert choice.message.role == "assistant"
        assert choice.message.content == echo_responder({"messages": messages("patch 1")})
        usage = resp.usage
        assert usage is not None
        assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert [m.id for m in c.models.list()] == ["fake-model"]

        [rec] = fake.requests
        assert rec.n == 0 and rec.fault == "ok" and rec.status == 200 and rec.answered
        assert rec.authorization == f"Bearer {KEY}"
        assert rec.body is not None and rec.body["model"] == "gpt-test"
        assert rec.message_hash == message_hash(messages("patch 1"))
        assert rec.content == choice.message.content
        assert fake.errors == []


def test_async_client_concurrent_requests() -> None:
    async def run(base_url: str) -> list[str | None]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0) as ac:
            resps = await asyncio.gather(
                *(
                    ac.chat.completions.create(model="m", messages=messages(f"p{i % 10}"))
                    for i in range(30)
                )
            )
        return [r.choices[0].message.content for r in resps]

    with FakeOpenAI(latency=0.05) as fake:
        contents = asyncio.run(run(fake.base_url))
        assert len(set(contents)) == 10
        per_hash = fake.answered_per_hash()
        assert len(per_hash) == 10 and set(per_hash.values()) == {3}
        assert fake.requests_per_hash() == per_hash


def test_custom_responder_sees_the_request() -> None:
    def responder(req: dict[str, Any]) -> str:
        return f"{req['model']}: {req['messages'][-1]['content'].upper()}"

    with FakeOpenAI(responder) as fake, client(fake) as c:
        assert ask(c, "forest").choices[0].message.content == "gpt-test: FOREST"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "ok"])
def test_each_fault_surfaces_as_the_expected_sdk_outcome(fault: str, mode: str) -> None:
    async def ask_async(base_url: str) -> Any:
        async with openai.AsyncOpenAI(
            base_url=base_url, api_key=KEY, max_retries=0, timeout=0.5
        ) as ac:
            return await ac.chat.completions.create(model="m", messages=messages("x"))

    with (
        FakeOpenAI(faults=[fault, "ok"], retry_after=2, timeout_delay=1.0, slow_delay=0.25) as fake,
        client(fake, timeout=0.5) as c,
    ):

        def call() -> Any:
            return ask(c, "x") if mode == "sync" else asyncio.run(ask_async(fake.base_url))

        start = time.monotonic()
        if fault == "429":
            with pytest.raises(openai.RateLimitError) as err:
                call()
            assert err.value.status_code == 429
            assert err.value.response.headers["retry-after"] == "2"
            assert err.value.response.headers["retry-after-ms"] == "2000"
        elif fault in ("500", "503"):
            with pytest.raises(openai.InternalServerError) as ierr:
                call()
            assert ierr.value.status_code == int(fault)
        elif fault == "timeout":
            with pytest.raises(openai.APITimeoutError):
                call()
            assert time.monotonic() - start < 0.9
        elif fault == "drop":
            with pytest.raises(openai.APIConnectionError) as cerr:
                call()
            assert not isinstance(cerr.value, openai.APITimeoutError)
        elif fault == "malformed":
            with pytest.raises((json.JSONDecodeError, openai.APIResponseValidationError)):
                call()
        elif fault == "empty_choices":
            assert call().choices == []
        elif fault == "slow":
            assert call().choices[0].message.content.startswith("caption for ")
            assert time.monotonic() - start >= 0.25
        else:  # pragma: no cover
            pytest.fail(f"untested fault {fault}")

        assert ask(c, "x").choices, "the next request is served normally"
        assert fake.wait_for(2, timeout=5.0, done=True)
        first, second = fake.requests
        assert first.fault == fault
        assert first.answered == (fault == "slow")
        assert second.fault == "ok" and second.answered
        if fault == "timeout":  # the client had gone: nothing was sent
            assert first.status is None and first.content is None
        assert fake.errors == []


def test_schedules_list_callable_and_random() -> None:
    with FakeOpenAI(faults=["500", "ok", "500"]) as fake, client(fake) as c:
        outcomes = []
        for _ in range(5):
            try:
                ask(c)
                outcomes.append("ok")
            except openai.InternalServerError:
                outcomes.append("500")
        assert outcomes == ["500", "ok", "500", "ok", "ok"]  # past its end the list is ok
        assert fake.faults_applied() == {"500": 2, "ok": 3}

        fake.faults = lambda n, req: "503" if "bad" in req["messages"][-1]["content"] else "ok"
        assert ask(c, "good").choices
        with pytest.raises(openai.InternalServerError):
            ask(c, "bad")

    draw = random_faults(0.2, seed=7)
    kinds = [draw(n, {}) for n in range(2000)]
    assert kinds == [random_faults(0.2, seed=7)(n, {}) for n in range(2000)]
    assert kinds != [random_faults(0.2, seed=8)(n, {}) for n in range(2000)]
    assert 0.17 < sum(k != "ok" for k in kinds) / len(kinds) < 0.23
    assert set(kinds) == set(FAULTS)
    assert set(random_faults(1.0, kinds=["drop"])(n, {}) for n in range(50)) == {"drop"}
    with pytest.raises(ValueError, match="unknown fault"):
        FakeOpenAI(faults=["ok", "418"])
    with pytest.raises(ValueError, match="unknown fault"):
        random_faults(0.1, kinds=["teapot"])


def test_random_faults_with_a_retrying_client() -> None:
    """20 % faults, a client that retries each prompt: every prompt answered exactly once."""
    prompts = [f"patch {i}" for i in range(40)]
    faults = random_faults(0.2, seed=3, kinds=["429", "500", "503", "drop", "empty_choices"])
    with FakeOpenAI(faults=faults, retry_after=0) as fake, client(fake) as c:
        for p in prompts:
            for _attempt in range(10):
                try:
                    if ask(c, p).choices:
                        break
                except (openai.APIStatusError, openai.APIConnectionError):
                    pass
        per_hash = fake.answered_per_hash()
        assert per_hash == {message_hash(messages(p)): 1 for p in prompts}
        assert fake.count > len(prompts)
        assert sum(fake.requests_per_hash().values()) == fake.count


def test_recording_and_sliding_window() -> None:
    assert max_in_window([], 60) == 0
    assert max_in_window([0, 10, 59.9, 60, 120], 60) == 3
    assert max_in_window([0, 60, 120], 60) == 1  # the window is half-open
    assert max_in_window([5, 1, 3, 2, 4], 2.5) == 3

    with FakeOpenAI(faults=["ok", "500", "ok"]) as fake, client(fake) as c:
        for i in range(3):
            with contextlib.suppress(openai.InternalServerError):
                ask(c, f"p{i}")
            time.sleep(0.15)
        recs = fake.requests
        assert [r.n for r in recs] == [0, 1, 2]
        assert all(0.1 < b.t - a.t < 1.0 for a, b in itertools.pairwise(recs))
        assert all(abs(r.wall - time.time()) < 10 for r in recs)
        assert fake.max_in_window(60.0) == 3
        assert fake.max_in_window(0.1) == 1
        assert fake.max_in_window(60.0, answered_only=True) == 2
        assert fake.answered_per_hash() == {
            message_hash(messages("p0")): 1,
            message_hash(messages("p2")): 1,
        }
        fake.clear()
        assert fake.count == 0


def test_server_rate_limit() -> None:
    with FakeOpenAI(rate_limit=5, rate_window=0.5) as fake, client(fake) as c:
        ok, limited = 0, []
        for _ in range(8):
            try:
                ask(c)
                ok += 1
            except openai.RateLimitError as err:
                limited.append(err)
        assert ok == 5 and len(limited) == 3
        for err in limited:
            assert err.response.headers["retry-after"] == "1"
            assert 0 < int(err.response.headers["retry-after-ms"]) <= 500
        assert {r.fault for r in fake.requests[5:]} == {"rate_limit"}

        # A client that honours Retry-After keeps going, and never exceeds the limit.
        time.sleep(float(limited[-1].response.headers["retry-after-ms"]) / 1000)
        deadline = time.monotonic() + 1.6
        while time.monotonic() < deadline:
            try:
                ask(c)
            except openai.RateLimitError as err:
                time.sleep(float(err.response.headers["retry-after-ms"]) / 1000)
        answered = [r.t for r in fake.requests if r.answered]
        assert max_in_window(answered, 0.5) == 5
        assert len(answered) >= 5 + 2 * 5


def test_down_and_up() -> None:
    with FakeOpenAI() as fake, client(fake) as c:
        assert ask(c).choices
        url = fake.base_url

        fake.down()  # refuse: the port is closed, the kept-alive connection is cut
        assert not fake.running
        with pytest.raises(openai.APIConnectionError):
            ask(c)
        with pytest.raises(openai.APIConnectionError), client(fake) as fresh:
            ask(fresh)
        assert fake.count == 1  # refused requests never reach it

        fake.up()
        assert fake.base_url == url
        assert ask(c).choices

        fake.down("503")
        with pytest.raises(openai.InternalServerError) as err:
            ask(c)
        assert err.value.status_code == 503
        fake.up()
        assert ask(c).choices
        assert [r.fault for r in fake.requests] == ["ok", "ok", "down", "ok"]
        with pytest.raises(ValueError):
            fake.down("maybe")


def test_api_key_checked_and_recorded() -> None:
    canary = "sk-canary-5f1d2e"
    with FakeOpenAI(api_key=canary) as fake:
        with client(fake, key="sk-wrong") as bad, pytest.raises(openai.AuthenticationError):
            ask(bad)
        with client(fake, key=canary) as good:
            assert ask(good).choices
        assert [r.authorization for r in fake.requests] == [
            "Bearer sk-wrong",
            f"Bearer {canary}",
        ]
        assert [r.fault for r in fake.requests] == ["unauthorized", "ok"]


def test_bad_requests_and_responder_errors() -> None:
    def responder(req: dict[str, Any]) -> str:
        raise RuntimeError("boom")

    with FakeOpenAI(responder) as fake, client(fake) as c:
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="m", messages=messages("x"), stream=True)
        with pytest.raises(openai.InternalServerError, match="boom"):
            ask(c)
        assert [r.fault for r in fake.requests] == ["bad_request", "error"]
        assert fake.errors == []


def test_close_cuts_pending_requests_and_leaves_no_threads() -> None:
    fake = FakeOpenAI(faults=["timeout"], timeout_delay=30.0).start()
    errors: list[BaseException] = []

    def waiting_client() -> None:
        with client(fake, timeout=60.0) as c:
            try:
                ask(c)
            except openai.APIConnectionError as exc:
                errors.append(exc)

    t = threading.Thread(target=waiting_client)
    t.start()
    assert fake.wait_for(1, timeout=5.0)
    start = time.monotonic()
    fake.close()
    assert time.monotonic() - start < 2.0
    t.join(timeout=5.0)
    assert not t.is_alive()
    assert len(errors) == 1
    assert not fake.requests[0].answered
    assert _server_threads() == []
    fake.close()  # idempotent


def test_runs_in_its_own_process() -> None:
    script = Path(__file__).with_name("openai_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--fault-rate", "1", "--fault-kinds", "500", "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        with (
            openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as c,
            pytest.raises(openai.InternalServerError),
        ):
            ask(c, "remote")
        [rec] = fetch_log(base_url)
        assert rec.fault == "500" and rec.message_hash == message_hash(messages("remote"))
        assert rec.body is None
        assert fetch_log(base_url, bodies=True)[0].body is not None
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
