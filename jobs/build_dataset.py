"""Submit the dataset job: ``python jobs/build_dataset.py CONFIG.yaml``.

Thin on purpose: parse arguments, load the configuration, call cenlib. The cluster to use is part
of the configuration (``cluster:``), see cluster/README.md.
"""

from __future__ import annotations

import argparse
import sys

from cenlib.config import ConfigError, load_config
from cenlib.job import failed, run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="YAML run configuration")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = run_job(cfg)
    return 1 if failed(summary) else 0


if __name__ == "__main__":
    sys.exit(main())
