"""One stage, caption: ``python jobs/caption.py CONFIG [--cluster SPEC | --scheduler ADDR]`` (or
``python -m jobs.caption``); it reads what the earlier stages wrote in the run directory."""

import sys

from cenlib.entry import job_main

if __name__ == "__main__":
    sys.exit(job_main(stage="caption", doc=__doc__))
