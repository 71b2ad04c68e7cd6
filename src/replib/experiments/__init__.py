"""Run specifications, budgets, the results store and the claims ledger."""

from .budgets import BUDGETS, banner, banner_text, check_budget, default_budget, pick
from .distributed import Failure, SweepResult, run_many
from .plan import Plan, plan
from .runner import Record, RunContext, execute, lookup, run
from .spec import PAPERS, RunSpec, get_task, make_spec, task
from .store import RecordCorruptError, load_records, record_path, results_root

__all__ = [
    "BUDGETS", "PAPERS", "Failure", "Plan", "Record", "RecordCorruptError", "RunContext",
    "RunSpec", "SweepResult", "banner", "banner_text", "check_budget", "default_budget",
    "execute", "get_task", "load_records", "lookup", "make_spec", "pick", "plan",
    "record_path", "results_root", "run", "run_many", "task",
]
