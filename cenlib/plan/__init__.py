"""Stage *plan*: which patches a run builds, written once as a GeoParquet table.

Entry: :func:`run_plan`. Readers: :func:`read_plan` (the table), :func:`keys_from_plan` (its
patch keys on the run's grid). ``stage`` holds the pure steps, ``run`` the entry.
"""

from cenlib.plan.run import PLAN, PlanSummary, plan_path, run_plan
from cenlib.plan.stage import PlanError, keys_from_plan, make_plan, read_plan, write_plan

__all__ = [
    "PLAN",
    "PlanError",
    "PlanSummary",
    "keys_from_plan",
    "make_plan",
    "plan_path",
    "read_plan",
    "run_plan",
    "write_plan",
]
