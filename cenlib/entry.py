"""The command line of the thin scripts in ``jobs/``: ``CONFIG [--cluster SPEC | --scheduler
ADDR]`` and, for the whole pipeline, ``--until STAGE``; the same messages and exit codes as
``cen run``. Submit them from a login node, or start them inside a batch job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cenlib.config import load_config, with_cluster
from cenlib.job import STAGES, exit_code, run_job, stages_until


def job_main(
    argv: Sequence[str] | None = None, stage: str | None = None, doc: str | None = None
) -> int:
    """Run ``stage`` (or, when None, every stage up to ``--until``); return the exit code."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("config", help="YAML run configuration")
    parser.add_argument("--cluster", help="a cluster spec such as cluster/slurm.yaml")
    parser.add_argument("--scheduler", help="a running scheduler, e.g. tcp://host:8786")
    if stage is None:
        parser.add_argument("--until", default=STAGES[-1], help=f"last stage: {' | '.join(STAGES)}")
    args = parser.parse_args(argv)

    def job() -> dict[str, Any]:
        cfg = with_cluster(load_config(args.config), args.cluster, args.scheduler)
        stages = (stage,) if stage is not None else stages_until(args.until)
        return run_job(cfg, stages=stages)

    return exit_code(job, lambda kind, message: print(f"{kind}: {message}", file=sys.stderr))
