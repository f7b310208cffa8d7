"""A Dask client from the run configuration's ``cluster:`` block (or a ``cluster/*.yaml`` spec).

- ``local``: a LocalCluster of worker processes, closed when the job ends.
- ``address``: an existing scheduler (``tcp://`` or ``tls://`` with :class:`TLSConfig`).
- ``slurm``: dask-jobqueue's ``SLURMCluster``; workers are SLURM jobs, scaled adaptively.
- ``kubernetes``: the Dask operator's ``KubeCluster`` from the ``DaskCluster`` resource that
  :func:`kubernetes_spec` makes (``cen cluster spec`` prints it without a cluster).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from distributed import Client, LocalCluster
from distributed.security import Security

from cenlib.config import ClusterConfig, KubernetesConfig, SlurmConfig, TLSConfig
from cenlib.errors import CenError


class ClusterError(CenError):
    """A cluster that cannot be started or reached; the message says which and how to fix it."""


def security(tls: TLSConfig | None) -> Security | None:
    """The client's side of a TLS scheduler: encryption required, this CA, this certificate."""
    if tls is None:
        return None
    return Security(
        tls_ca_file=str(tls.ca_file),
        tls_client_cert=str(tls.cert),
        tls_client_key=str(tls.key),
        require_encryption=True,
    )


def slurm_cluster_kwargs(cc: ClusterConfig) -> dict[str, Any]:
    """The arguments of ``SLURMCluster`` for ``cc.slurm`` (one place, so a test can see them)."""
    s: SlurmConfig = cc.slurm
    kwargs: dict[str, Any] = {
        "queue": s.queue,
        "account": s.account,
        "cores": s.cores,
        "processes": s.processes,
        "memory": s.memory,
        "walltime": s.walltime,
        "job_script_prologue": list(s.job_script_prologue),
        "job_extra_directives": list(s.job_extra_directives),
        "python": s.python or sys.executable,
        "log_directory": s.log_directory,
        "local_directory": s.local_directory,
        "interface": s.interface,
        "scheduler_options": {"dashboard_address": cc.dashboard_address}
        | ({"host": s.scheduler_host} if s.scheduler_host else {}),
        # One thread per core across the job's worker processes: dask-jobqueue's own split.
    }
    sec = security(cc.tls)
    if sec is not None:
        kwargs["security"] = sec
        kwargs["protocol"] = "tls://"
    return kwargs


def slurm_job_script(cc: ClusterConfig, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script of one worker job, as ``SLURMCluster`` would submit it (no SLURM needed:
    to read before submitting, or to submit by hand against a scheduler of your own)."""
    from dask_jobqueue.slurm import SLURMJob

    kwargs = slurm_cluster_kwargs(cc)
    for key in ("scheduler_options", "security", "protocol"):
        kwargs.pop(key, None)
    script: str = SLURMJob(scheduler=scheduler, name="cen-worker", **kwargs).job_script()
    return script


def kubernetes_spec(k: KubernetesConfig) -> dict[str, Any]:
    """The ``DaskCluster`` resource (kubernetes.dask.org/v1) for ``k``, from the operator's own
    ``make_cluster_spec``, with the pods' environment and the worker command set."""
    from dask_kubernetes.operator import make_cluster_spec

    spec: dict[str, Any] = make_cluster_spec(
        name=k.name,
        image=k.image,
        n_workers=k.n_workers,
        resources=k.resources or None,
        env=dict(k.env) or None,
        worker_command=k.worker_command,
    )
    # The helper starts the scheduler with `dask-scheduler`, a script distributed no longer
    # installs (the image has `dask scheduler`, as cluster/Dockerfile checks).
    for c in spec["spec"]["scheduler"]["spec"]["containers"]:
        if c.get("args", [None])[0] == "dask-scheduler":
            c["args"] = ["dask", "scheduler", *c["args"][1:]]
    if k.namespace:
        spec["metadata"]["namespace"] = k.namespace
    # Plain data, no shared sub-objects (YAML would print them as &anchors / *aliases).
    plain: dict[str, Any] = json.loads(json.dumps(spec))
    return plain


@contextlib.contextmanager
def _slurm(cc: ClusterConfig) -> Iterator[Client]:
    from dask_jobqueue.slurm import SLURMCluster

    try:
        cluster = SLURMCluster(**slurm_cluster_kwargs(cc))
    except Exception as e:  # sbatch missing, a bad directive: say where to look
        raise ClusterError(
            f"cluster.slurm: could not start a SLURMCluster ({type(e).__name__}: {e}); check "
            "that sbatch/squeue are on PATH and the queue exists (`sinfo`)"
        ) from e
    with cluster:
        # Ask SLURM whether it would run the worker job before adapting: a job it rejects (no
        # controller, a bad partition, more memory than a node has) would otherwise surface only
        # as "0 workers arrived" after worker_timeout, and an AssertionError from the close.
        try:
            probe = subprocess.run(
                ["sbatch", "--test-only"],
                input=cluster.job_script(),
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ClusterError(
                f"cluster.slurm: `sbatch --test-only` failed ({type(e).__name__}: {e}); check "
                "that SLURM's client tools are on PATH and the controller answers (`sinfo`)"
            ) from e
        if probe.returncode != 0:
            said = " ".join(probe.stderr.split()) or f"exit code {probe.returncode}"
            raise ClusterError(
                f"cluster.slurm: SLURM would not run the worker job ({said}); check SLURM_CONF "
                "and the spec's queue, account, cores and memory against `sinfo -N -l` "
                "(`cen cluster spec SPEC` prints the job script)"
            )
        cluster.adapt(minimum_jobs=cc.slurm.minimum, maximum_jobs=cc.slurm.maximum)
        with Client(cluster, security=security(cc.tls)) as client:
            yield client


@contextlib.contextmanager
def _kubernetes(cc: ClusterConfig) -> Iterator[Client]:
    from dask_kubernetes.operator import KubeCluster

    k = cc.kubernetes
    try:
        cluster = KubeCluster(custom_cluster_spec=kubernetes_spec(k), namespace=k.namespace)
    except Exception as e:  # no kubeconfig, no operator: name the fix
        raise ClusterError(
            f"cluster.kubernetes: could not create DaskCluster {k.name!r} "
            f"({type(e).__name__}: {e}); check `kubectl get crd daskclusters.kubernetes.dask.org` "
            "(the Dask operator must be installed) and your kubeconfig"
        ) from e
    with cluster:
        cluster.adapt(minimum=k.minimum, maximum=k.maximum)
        with Client(cluster) as client:
            yield client


@contextlib.contextmanager
def make_client(cc: ClusterConfig) -> Iterator[Client]:
    """Yield a connected client; a cluster started here is closed on exit."""
    if cc.kind == "address":
        try:
            client = Client(cc.address, security=security(cc.tls), timeout=cc.worker_timeout)
        except OSError as e:  # refused, timed out, or hung up on (TLS against plain)
            raise ClusterError(
                f"cluster.address {cc.address}: no scheduler answered ({type(e).__name__}: {e});"
                " start one (`dask scheduler`) or fix the address and open its port (8786 by "
                "default); a TLS scheduler needs tls:// and the spec's tls: certificates"
            ) from e
        with client:
            yield client
        return
    if cc.kind == "slurm":
        with _slurm(cc) as client:
            yield client
        return
    if cc.kind == "kubernetes":
        with _kubernetes(cc) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=cc.n_workers,
            threads_per_worker=cc.threads_per_worker,
            processes=True,
            memory_limit=cc.memory_limit,
            dashboard_address=cc.dashboard_address,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def external(cc: ClusterConfig) -> bool:
    """True when the workers are not started by this process (they may still be arriving)."""
    return cc.kind != "local"
