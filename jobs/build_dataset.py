"""The whole pipeline: ``python jobs/build_dataset.py CONFIG [--cluster SPEC] [--until STAGE]``
(or ``python -m jobs.build_dataset``). Thin on purpose: the work is in cenlib; the cluster is
the config's ``cluster:`` block unless --cluster or --scheduler says otherwise."""

import sys

from cenlib.entry import job_main

if __name__ == "__main__":
    sys.exit(job_main(doc=__doc__))
