"""Submit the dataset job: ``python jobs/build_dataset.py CONFIG.yaml``.

Thin on purpose: parse arguments, load the configuration, call cenlib. The cluster to use is part
of the configuration (``cluster:``), see cluster/README.md.
"""

from __future__ import annotations

import argparse
import sys

from cenlib.config import load_config
from cenlib.errors import CenError
from cenlib.job import STAGES, incomplete, run_job, stages_until


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="YAML run configuration")
    parser.add_argument("--until", default=STAGES[-1], help=f"last stage: {' | '.join(STAGES)}")
    args = parser.parse_args(argv)
    try:
        summary = run_job(load_config(args.config), stages=stages_until(args.until))
    except CenError as e:  # the same one-line messages and exit codes as `cen run`
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished work is saved; run the same command to resume", file=sys.stderr
        )
        return 130
    why = incomplete(summary)
    if why:
        print(f"incomplete: {why}", file=sys.stderr)
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())
