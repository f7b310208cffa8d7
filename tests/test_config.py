"""Configuration: loads, fills defaults, and fails with one clear message per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cenlib.config import CaptionConfig, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def test_demo_config_loads_and_resolves_defaults() -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.world.preset == "demo"
    assert cfg.sources.sentinel2.dialect == "earth-search"
    assert cfg.time.interval == "2021-06-01T00:00:00Z/2021-09-30T23:59:59Z"
    dumped = yaml.safe_load(cfg.to_yaml())
    # Defaults the file leaves out appear in the resolved config.
    assert dumped["cluster"]["dashboard_address"] == ":0"
    assert parse_config(dumped) == cfg  # round-trips


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "grid:\n  kind: utm\n  zoomm: 13\n"))
    msg = str(e.value)
    assert "grid.zoomm" in msg and "unknown key" in msg and "run.yaml" in msg


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "thresholds:\n  max_cloud_cover: lots\n"))
    msg = str(e.value)
    assert "thresholds.max_cloud_cover" in msg and "'lots'" in msg


def test_bad_enum_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"grid\.kind.*'chatearthnet' or 'utm'"):
        load_config(_write(tmp_path, "grid: {kind: mercator}\n"))


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found.*configs/demo\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "grid: [unclosed\n"))


def test_api_keys_never_in_config(tmp_path: Path) -> None:
    text = "caption:\n  endpoints:\n    - {base_url: http://x/v1, model: m, api_key: sk-123}\n"
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text))
    assert "api_key_env" in str(e.value) and "sk-123" not in str(e.value)


def test_key_value_in_api_key_env_rejected(tmp_path: Path) -> None:
    text = (
        "caption:\n  endpoints:\n    - {base_url: http://x/v1, model: m, api_key_env: sk-abc.def}\n"
    )
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        load_config(_write(tmp_path, text))


def test_bad_bbox_and_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(
            _write(
                tmp_path,
                "aoi: [[10, 50, 5, 40]]\nsources:\n  sentinel2: {api: ftp://x, collection: c}\n",
            )
        )
    msg = str(e.value)
    assert "aoi" in msg and "sources.sentinel2.api" in msg and "2 problem" in msg


def _cen(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "cen"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
def test_cli_config_show_prints_resolved_config() -> None:
    r = _cen("config", "show", str(REPO / "configs" / "demo.yaml"))
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["thresholds"]["min_valid_fraction"] == 0.9


@pytest.mark.e2e
def test_cli_config_show_error_exit_code(tmp_path: Path) -> None:
    r = _cen("config", "show", str(_write(tmp_path, "colour: blue\n")))
    assert r.returncode == 2
    assert "colour" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    "sub",
    [
        [],
        ["config"],
        ["config", "show"],
        ["world", "build"],
        ["stac", "serve"],
        ["stac", "search"],
        ["run"],
        ["plan"],
        ["ingest"],
        ["analyze"],
        ["prompt"],
    ],
)
def test_cli_help(sub: list[str]) -> None:
    r = _cen(*sub, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and len(r.stdout) > 200


def test_readme_caption_example_is_a_valid_config() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("```yaml\ncaption:") + len("```yaml\n") :]
    block = block[: block.index("```")]
    caption = CaptionConfig(**yaml.safe_load(block)["caption"])
    assert [e.kind for e in caption.endpoints] == ["rules", "openai", "openai", "smollm2"]
    assert caption.max_cost == 20.0
