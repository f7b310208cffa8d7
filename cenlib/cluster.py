"""A Dask client from the run configuration: a LocalCluster of worker processes or a scheduler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from distributed import Client, LocalCluster

from cenlib.config import ClusterConfig


@contextlib.contextmanager
def make_client(cc: ClusterConfig) -> Iterator[Client]:
    """Yield a connected client; a LocalCluster started here is closed on exit."""
    if cc.kind == "address":
        with Client(cc.address) as client:
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
