"""The import contracts (``.importlinter``, checked by ``lint-imports`` in ``make lint``) name
every module of every stage, so that a new module cannot slip past them."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = (
    "plan",
    "search",
    "ingest",
    "analysis",
    "prompts",
    "captions",
    "verify",
    "review",
    "export",
    "report",
)


def _contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO / ".importlinter")
    return parser


def _listed(value: str) -> set[str]:
    return {line.strip() for line in value.splitlines() if line.strip()}


def test_every_stage_module_is_behind_its_package() -> None:
    parser = _contracts()
    for stage in STAGES:
        section = f"importlinter:contract:{stage}-through-its-package"
        assert parser.has_section(section), f"{section} missing from .importlinter"
        modules = {
            f"cenlib.{stage}.{p.stem}"
            for p in (REPO / "cenlib" / stage).glob("*.py")
            if p.stem != "__init__"
        }
        assert _listed(parser[section]["forbidden_modules"]) == modules, stage
        others = {f"cenlib.{s}" for s in STAGES if s != stage} | {"cenlib.job", "cenlib.cli"}
        assert _listed(parser[section]["source_modules"]) == others, stage


def test_the_layers_name_every_stage_and_the_shared_ground_none() -> None:
    parser = _contracts()
    layers = _listed(parser["importlinter:contract:stages-in-order"]["layers"])
    # entry.py (the jobs/ scripts' command line) sits on top of the job, beside the CLI.
    assert layers == {f"cenlib.{s}" for s in STAGES} | {"cenlib.job", "cenlib.cli", "cenlib.entry"}
    shared = _listed(parser["importlinter:contract:shared-ground"]["source_modules"])
    top = {p.stem for p in (REPO / "cenlib").glob("*.py")} - {"__init__", "job", "cli", "entry"}
    packages = {p.parent.name for p in (REPO / "cenlib").glob("*/__init__.py")} - set(STAGES)
    assert shared == {f"cenlib.{m}" for m in top | packages}
