"""The three budgets, and the banner every executed notebook shows.

* ``smoke``: seconds per notebook on 2 CPU cores; exercises every code path; its numbers are
  meaningless and labelled so (used by nbval and CI). Its records go to
  ``data/results/smoke/`` (git-ignored) and never count in a scorecard.
* ``cpu``: the most faithful run a 2-core machine does in minutes to an hour per notebook
  (MNIST-scale experiments at paper settings; CIFAR with documented cuts).
* ``paper``: the paper's own settings, meant for a GPU.
"""

from __future__ import annotations

from typing import TypeVar

BUDGETS = ("smoke", "cpu", "paper")
DESCRIPTIONS = {
    "smoke": "a seconds-long run that exercises every code path; the numbers are meaningless "
    "and no claim is judged on them",
    "cpu": "the most faithful setting a 2-core CPU runs in minutes to an hour; where it departs "
    "from the paper (training subset, epochs, width) the notebook says so",
    "paper": "the paper's own settings (epochs, batch size, schedule), run on a GPU",
}
T = TypeVar("T")


def check_budget(budget: str) -> str:
    if budget not in BUDGETS:
        raise ValueError(f"budget={budget!r} is not known; allowed values: {list(BUDGETS)}")
    return budget


def default_budget() -> str:
    """``paper`` when a GPU is present, ``cpu`` otherwise."""
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def pick(budget: str, *, smoke: T, cpu: T, paper: T) -> T:
    """The value of a setting at ``budget``: ``pick(budget, smoke=1, cpu=40, paper=160)``."""
    return {"smoke": smoke, "cpu": cpu, "paper": paper}[check_budget(budget)]


def banner_text(budget: str, notebook: str = "") -> str:
    import datetime
    import platform

    import torch

    check_budget(budget)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor()
    dev = dev or platform.machine()
    where = f" `{notebook}`" if notebook else ""
    warn = "\n\n**Smoke budget: the numbers below are meaningless.**" if budget == "smoke" else ""
    return (
        f"**Budget: `{budget}`** ({DESCRIPTIONS[budget]}). Notebook{where} executed on "
        f"{datetime.date.today().isoformat()}, device: {dev}, torch {torch.__version__}."
        f"{warn}"
    )


def banner(budget: str, notebook: str = ""):
    """Display the budget banner (Markdown) at the top of an executed notebook."""
    from IPython.display import Markdown, display

    display(Markdown(banner_text(budget, notebook)))
