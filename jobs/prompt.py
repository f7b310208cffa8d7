"""One stage, prompt: ``python jobs/prompt.py CONFIG [--cluster SPEC | --scheduler ADDR]`` (or
``python -m jobs.prompt``); it reads what the earlier stages wrote in the run directory."""

import sys

from cenlib.entry import job_main

if __name__ == "__main__":
    sys.exit(job_main(stage="prompt", doc=__doc__))
