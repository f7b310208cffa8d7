"""One stage, ingest: ``python jobs/ingest.py CONFIG [--cluster SPEC | --scheduler ADDR]`` (or
``python -m jobs.ingest``); it reads what the earlier stages wrote in the run directory."""

import sys

from cenlib.entry import job_main

if __name__ == "__main__":
    sys.exit(job_main(stage="ingest", doc=__doc__))
