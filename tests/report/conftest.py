"""A run worth reporting on: the session's Dolomites run (ingested and analysed, see the top
conftest) prompted, captioned through a real OpenAI-protocol server on loopback that answers
some patches wrongly (so that verification fails, repairs and sends some to review), reviewed
(accept, reject, edit, and a stale decision), exported, with the summary.json the job writes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from caption_support import caption_config, endpoint
from distributed import Client
from openai_server import FakeOpenAI

from cenlib.captions import run_captions
from cenlib.captions.rules import answer as rules_answer
from cenlib.config import parse_config
from cenlib.export import run_export
from cenlib.prompts import run_prompts
from cenlib.review.db import record
from cenlib.verify import read_verdicts, run_verify

WRONG = (
    "A dense mangrove forest covers the whole image, with a glacier in the top left corner and "
    "snowfields along the bottom edge; there is nothing else to see in this scene at all."
)


def _fate(request: dict[str, Any]) -> int:
    """0, 1: answered truthfully; 2: wrong, then right when corrected; 3: always wrong."""
    prompt = json.dumps(request["messages"][:2], sort_keys=True).encode()
    return hashlib.sha256(prompt).digest()[0] % 4


def responder(request: dict[str, Any]) -> str:
    fate, follow_up = _fate(request), len(request["messages"]) > 2
    if fate == 3 or (fate == 2 and not follow_up):
        return WRONG
    return str(rules_answer(request["messages"][:2], None, 0, "x"))


@pytest.fixture(scope="session")
def report_run(
    tmp_path_factory: pytest.TempPathFactory, dolomites_run: Path, dask_client: Client
) -> Path:
    """The exported run (tests copy it before writing into it)."""
    out = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(dolomites_run, out)
    with FakeOpenAI(responder=responder) as fake:
        caption = caption_config(endpoint(fake.base_url, price_in=0.5, price_out=1.5))
        cfg = parse_config(
            {
                "name": "report-test",
                "output": str(out),
                "caption": caption.model_dump(),
                "verify": {"repair_rounds": 1},
            }
        )
        summary: dict[str, Any] = {"name": cfg.name, "output": str(out)}
        summary["prompt"] = run_prompts(cfg, dask_client)
        summary["caption"] = run_captions(cfg.caption, out, dask_client)
        summary["verify"] = run_verify(cfg, dask_client)
    verdicts = list(read_verdicts(out))
    by_status = {s: [v for v in verdicts if v.status == s] for s in ("pass", "repaired", "failed")}
    assert all(len(vs) >= 2 for vs in by_status.values()), {s: len(v) for s, v in by_status.items()}
    passed, failed = by_status["pass"], by_status["failed"]
    record(out, failed[0].patch_id, failed[0].key, "accept", "ana")  # a failed caption let in
    record(out, passed[0].patch_id, passed[0].key, "reject", "ana")
    record(out, passed[1].patch_id, passed[1].key, "edit", "ben", text="Grass and trees.")
    record(out, failed[1].patch_id, "0" * 64, "accept", "ben")  # stale: another caption
    summary["export"] = run_export(cfg, dask_client)
    summary["seconds"] = 12.5
    text = json.dumps({k: getattr(v, "as_dict", lambda v=v: v)() for k, v in summary.items()})
    (out / "summary.json").write_text(text + "\n", encoding="utf-8")
    return out


@pytest.fixture
def run_dir(report_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the exported run."""
    out = tmp_path / "run"
    shutil.copytree(report_run, out)
    return out
