"""Cluster specs: the files in cluster/, the flags that override a config's cluster, the
Kubernetes resource checked against the operator's own CRD, and a TLS scheduler for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from cenlib.cluster import kubernetes_spec, slurm_job_script
from cenlib.config import (
    ClusterConfig,
    ConfigError,
    KubernetesConfig,
    load_cluster_spec,
    parse_config,
    with_cluster,
)
from cenlib.stac.server import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOLOMITES = [11.97, 46.56, 12.03, 46.61]  # a few patches of the demo world: a quick run


@pytest.mark.parametrize("spec", sorted((REPO / "cluster").glob("*.yaml")), ids=lambda p: p.name)
def test_every_spec_in_cluster_loads(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = spec.read_text()
    if "tls:" in text and "certs/" in text:  # its certificates are made by cluster/tls.sh
        subprocess.run(["bash", str(REPO / "cluster" / "tls.sh"), str(tmp_path / "certs")],
                       check=True, capture_output=True)  # fmt: skip
        monkeypatch.chdir(tmp_path)
    cc = load_cluster_spec(spec)
    assert cc.kind == spec.stem.split("-")[0].replace("scheduler", "address")


def test_a_flag_replaces_the_configs_cluster(tmp_path: Path) -> None:
    cfg = parse_config({"cluster": {"kind": "local", "n_workers": 3}})
    spec = tmp_path / "s.yaml"
    spec.write_text("cluster: {kind: slurm, slurm: {cores: 4, maximum: 9}}\n")
    swapped = with_cluster(cfg, spec)
    assert swapped.cluster.kind == "slurm" and swapped.cluster.slurm.maximum == 9
    assert swapped.model_dump(exclude={"cluster"}) == cfg.model_dump(exclude={"cluster"})
    by_address = with_cluster(cfg, scheduler="tcp://10.0.0.5:8786")
    assert by_address.cluster == ClusterConfig(kind="address", address="tcp://10.0.0.5:8786")
    assert with_cluster(cfg) is cfg
    with pytest.raises(ConfigError, match="not both"):
        with_cluster(cfg, spec, "tcp://x:1")


def test_bad_specs_name_the_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--cluster .*nope.yaml: no such file"):
        load_cluster_spec(tmp_path / "nope.yaml")
    run = tmp_path / "run.yaml"
    run.write_text("name: x\ncluster: {kind: local}\n")
    with pytest.raises(ConfigError, match="a run configuration, not a cluster spec"):
        load_cluster_spec(run)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: {kind: slurm, slurm: {minimum: 5, maximum: 2, cores: 0}}\n")
    with pytest.raises(ConfigError) as e:
        load_cluster_spec(bad)
    assert "bad.yaml (cluster)" in str(e.value) and "slurm.cores" in str(e.value)
    tls = tmp_path / "tls.yaml"
    tls.write_text("cluster: {kind: address, address: 'tls://h:8786'}\n")
    with pytest.raises(ConfigError, match="is TLS: add tls"):
        load_cluster_spec(tls)
    missing = tmp_path / "missing.yaml"
    missing.write_text(
        "cluster: {kind: address, address: 'tls://h:8786', "
        "tls: {ca_file: no/ca.pem, cert: no/c.pem, key: no/k.pem}}\n"
    )
    with pytest.raises(ConfigError, match=r"tls.ca_file: no/ca.pem is not a file"):
        load_cluster_spec(missing)


def _crd_schema() -> dict[str, Any]:
    import dask_kubernetes

    crd = (
        Path(dask_kubernetes.__file__).parent
        / "operator/deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
    )
    doc = yaml.safe_load(crd.read_text())
    (version,) = [v for v in doc["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _undeclared(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields Kubernetes would prune: set in ``value`` but not declared in the CRD's schema."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if props is not None and k in props:
                out += _undeclared(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                out += _undeclared(v, extra, f"{path}.{k}")
            elif props is not None or extra is False:
                out.append(f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += _undeclared(v, schema["items"], f"{path}[{i}]")
    return out


def test_kubernetes_spec_is_a_daskcluster_the_crd_accepts() -> None:
    cc = load_cluster_spec(REPO / "cluster" / "kubernetes.yaml")
    spec = kubernetes_spec(cc.kubernetes)
    assert spec["apiVersion"] == "kubernetes.dask.org/v1" and spec["kind"] == "DaskCluster"
    body = {k: v for k, v in spec.items() if k not in ("apiVersion", "kind", "metadata")}
    schema = _crd_schema()
    errors = [e.message for e in Draft7Validator(schema).iter_errors(body)]
    assert not errors
    assert not _undeclared(body, schema)
    # The operator's fields carry the spec's values.
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == cc.kubernetes.n_workers
    (container,) = worker["spec"]["containers"]
    assert container["image"] == cc.kubernetes.image
    assert container["resources"] == cc.kubernetes.resources
    assert {e["name"]: e["value"] for e in container["env"]} == cc.kubernetes.env
    # Every container starts a command the image has (the image installs the same lock).
    for role in ("scheduler", "worker"):
        for c in spec["spec"][role]["spec"]["containers"]:
            assert (BIN / c["args"][0]).is_file(), f"{role}: {c['args'][0]} is not installed"
            assert c["args"][1] == role
    # A typo in a field the operator reads would be pruned silently: the check catches it.
    assert _undeclared({"spec": {"worker": {"replica": 2}}}, schema) == [".spec.worker.replica"]


def test_kubernetes_namespace_and_printed_resource() -> None:
    spec = kubernetes_spec(KubernetesConfig(name="cen-a", namespace="geo", n_workers=0))
    assert spec["metadata"] == {"name": "cen-a", "namespace": "geo"}
    out = subprocess.run(
        [str(BIN / "cen"), "cluster", "spec", str(REPO / "cluster" / "kubernetes.yaml")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "&id" not in out.stdout  # plain YAML, no anchors for kubectl to trip on
    printed = yaml.safe_load(out.stdout)
    k = load_cluster_spec(REPO / "cluster" / "kubernetes.yaml").kubernetes
    assert printed == kubernetes_spec(k)


def test_slurm_job_script_carries_the_spec() -> None:
    cc = load_cluster_spec(REPO / "cluster" / "slurm.yaml")
    script = slurm_job_script(cc, "tcp://10.1.2.3:8786")
    s = cc.slurm
    assert f"#SBATCH --cpus-per-task={s.cores}" in script
    assert "#SBATCH --mem=8G" in script and f"#SBATCH -t {s.walltime}" in script
    for line in s.job_script_prologue:
        assert line in script.splitlines()
    assert "tcp://10.1.2.3:8786" in script and "--nthreads 2" in script
    assert script.index(s.job_script_prologue[-1]) < script.index("dask_worker")


# --- TLS, for real: a scheduler and a worker started with certificates on loopback -----------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    certs = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(REPO / "cluster" / "tls.sh"), str(certs)],
                   check=True, capture_output=True)  # fmt: skip
    tls = ["--tls-ca-file", str(certs / "ca.pem"), "--tls-cert", str(certs / "cert.pem"),
           "--tls-key", str(certs / "key.pem")]  # fmt: skip
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    sched = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
         "--port", str(port), "--dashboard-address", ":0", *tls],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "2",
         "--no-dashboard", *tls],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield address, certs
    finally:
        for p in (worker, sched):
            p.terminate()
            p.wait(timeout=30)


def _config(tmp_path: Path, demo_world: Path, name: str) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg.update(output=str(tmp_path / name), aoi=[DOLOMITES])
    cfg["world"]["cache_dir"] = str(demo_world.parent)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cen"), *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={**os.environ, "COLUMNS": "200"})  # fmt: skip


@pytest.mark.e2e
def test_job_on_a_tls_scheduler_and_plain_tcp_refused(
    tls_cluster: tuple[str, Path], tmp_path: Path, demo_world: Path
) -> None:
    address, certs = tls_cluster
    spec = tmp_path / "tls-spec.yaml"
    spec.write_text(yaml.safe_dump({"cluster": {
        "kind": "address", "address": address, "worker_timeout": 60,
        "tls": {"ca_file": str(certs / "ca.pem"), "cert": str(certs / "cert.pem"),
                "key": str(certs / "key.pem")}}}))  # fmt: skip
    config = _config(tmp_path, demo_world, "tls")
    t = time.monotonic()
    proc = _cen("run", str(config), "--cluster", str(spec), "--until", "prompt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "tls" / "summary.json").read_text())
    assert summary["cluster"]["workers"] == 2
    assert summary["ingest"]["ok"] > 0 and (tmp_path / "tls" / "prompts.jsonl").is_file()
    print(f"TLS run: {time.monotonic() - t:.1f} s")
    # The same scheduler over plain TCP: the handshake fails and the error says what to do.
    plain = address.replace("tls://", "tcp://")
    proc = _cen("plan", str(config), "--scheduler", plain, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cluster.address {plain}: no scheduler answered" in proc.stderr
    assert "tls://" in proc.stderr and "Traceback" not in proc.stderr
