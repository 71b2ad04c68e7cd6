"""The claims ledger: each paper's numbers, our measurements, and a status per claim.

``data/claims/<paper>.csv`` has one row per numeric (or checkable qualitative) claim:

=============== ==============================================================================
column          meaning
=============== ==============================================================================
claim_id        unique within the paper, e.g. ``T1-lenet300-norm-error``
where           where the paper states it, e.g. ``Table 1, LeNet-300-100, NORM``
setting         the experimental setting in words
metric          what is measured (``test error %``, ``compression x``, ``statement``)
paper_value     the paper's number (``1`` for a qualitative statement that is claimed true)
compare         ``abs``: reproduced when abs(ours - paper) <= tolerance;
                ``min``: ours >= paper - tolerance (at least as good, larger is better);
                ``max``: ours <= paper + tolerance (at most, smaller is better);
                ``bool``: ours is true (a qualitative statement checked by a notebook)
tolerance       in the metric's unit
notebook        the notebook that measures it
not_run_reason  filled when the claim cannot be run here (e.g. ``data not available: CIFAR-100``)
=============== ==============================================================================

Notebooks attach measurements with :func:`record_claims`; :func:`status_table` joins both into
``reproduced`` / ``not reproduced`` / ``not run`` with the budget that produced the number.
Smoke-budget measurements never make a claim reproduced. A magnitude measured at a cut budget
(an accuracy or a sparsity of a narrower, shorter run than the paper's) is not the paper's
quantity: notebooks pass such values through :func:`gate_cut`, which records them as
unmeasured with our value in the note, so the claim shows as not run rather than as reproduced
or not reproduced by a comparison that means nothing. A claim left unmeasured shows the
note its notebook recorded with it, else the ledger's ``not_run_reason``: the ledger says why a
claim cannot run offline, the notebook what happened where it ran (the data loaded, but the
budget does not test the claim, say).
"""

from __future__ import annotations

import csv
import datetime
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import repo_root
from .budgets import check_budget
from .store import results_root, write_json_atomic

COLUMNS = ["claim_id", "where", "setting", "metric", "paper_value", "compare", "tolerance",
           "notebook", "not_run_reason"]
COMPARES = ("abs", "min", "max", "bool")
STATUSES = ("reproduced", "not reproduced", "not run")
BUDGET_RANK = {"paper": 2, "cpu": 1, "smoke": 0}


def claims_path(paper: str) -> Path:
    return repo_root() / "data" / "claims" / f"{paper}.csv"


def load_claims(paper: str) -> list[dict[str, Any]]:
    """Read and validate ``data/claims/<paper>.csv``."""
    path = claims_path(paper)
    if not path.exists():
        raise FileNotFoundError(f"no claims ledger for paper {paper!r} at {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and list(rows[0].keys()) != COLUMNS:
        raise ValueError(f"{path}: columns must be {COLUMNS}, found {list(rows[0].keys())}")
    seen = set()
    for i, row in enumerate(rows, start=2):
        if row["claim_id"] in seen:
            raise ValueError(f"{path}:{i}: duplicate claim_id {row['claim_id']!r}")
        seen.add(row["claim_id"])
        if row["compare"] not in COMPARES:
            raise ValueError(f"{path}:{i}: compare={row['compare']!r}; allowed: {COMPARES}")
        try:
            row["paper_value"] = float(row["paper_value"])
            row["tolerance"] = float(row["tolerance"] or 0)
        except ValueError as exc:
            raise ValueError(f"{path}:{i}: paper_value/tolerance must be numbers") from exc
    return rows


def _measurements_dir(paper: str, budget: str) -> Path:
    base = results_root() / "smoke" if budget == "smoke" else results_root()
    return base / paper


def gate_cut(budget: str, values: Mapping[str, Any], judged_at_cut: Iterable[str],
             cut: str | Mapping[str, str] | None = None,
             notes: Mapping[str, str] | None = None) -> tuple[dict, dict]:
    """Measurements for :func:`record_claims` from ``budget``: at ``paper`` every value; at a cut
    budget (``cpu``, ``smoke``) only the claims a cut can test (``judged_at_cut``: typically
    statements about how methods compare, or a magnitude the cut measures at the paper's own
    setting). Every other value becomes None with the note ``not comparable at the <budget>
    budget (<how>); ours: <value>``, so its claim shows as not run, with our number.

    ``how`` is ``cut`` (one text, or texts per network keyed by a claim id's second field; all of
    them where none matches), else the claim's own note in ``notes``. Returns ``(values,
    notes)``; None values (not measured) pass through with their notes."""
    judged = set(judged_at_cut)
    out, notes = {}, dict(notes or {})
    for cid, v in values.items():
        if budget == "paper" or cid in judged or v is None:
            out[cid] = v
            continue
        out[cid] = None
        if isinstance(v, float) and math.isnan(v):
            shown = "undefined (NaN)"
        else:
            shown = f"{v:.4g}" if isinstance(v, float) else str(v)
        if cut is None:
            how = notes.get(cid) or f"a reduced {budget} setting"
        elif isinstance(cut, str):
            how = cut
        else:
            how = cut.get(cid.split("-")[1] if cid.count("-") else "", "; ".join(cut.values()))
        notes[cid] = f"not comparable at the {budget} budget ({how}); ours: {shown}"
    return out, notes


def record_claims(
    paper: str,
    notebook: str,
    budget: str,
    measurements: dict[str, Any],
    run_ids: list[str] | None = None,
    notes: dict[str, str] | None = None,
) -> Path:
    """Store a notebook's measured values for claims of ``paper`` (written atomically).

    ``measurements`` maps claim ids to a number, a bool, or None (not measured; give the
    reason in ``notes``).
    """
    check_budget(budget)
    known = {c["claim_id"] for c in load_claims(paper)}
    unknown = sorted(set(measurements) - known)
    if unknown:
        raise ValueError(f"unknown claim id(s) {unknown} for paper {paper!r}")
    notes = notes or {}
    path = _measurements_dir(paper, budget) / f"claims-{notebook}-{budget}.json"
    write_json_atomic(path, {
        "paper": paper, "notebook": notebook, "budget": budget, "run_ids": run_ids or [],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "measurements": {k: {"value": _plain(v), "note": notes.get(k, "")}
                         for k, v in measurements.items()},
    })
    return path


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    return float(v)


def load_measurements(paper: str, include_smoke: bool = False) -> dict[str, dict[str, Any]]:
    """Best measurement per claim: paper budget over cpu (over smoke when included)."""
    files = list(_measurements_dir(paper, "cpu").glob("claims-*.json"))
    if include_smoke:
        files += list(_measurements_dir(paper, "smoke").glob("claims-*.json"))
    import json

    best: dict[str, dict[str, Any]] = {}
    for f in sorted(files):
        blob = json.loads(f.read_text())
        for cid, m in blob["measurements"].items():
            cand = dict(m, budget=blob["budget"], notebook=blob["notebook"])
            old = best.get(cid)
            if m["value"] is None and old is not None:
                continue
            if old is None or old["value"] is None or \
                    BUDGET_RANK[cand["budget"]] > BUDGET_RANK[old["budget"]]:
                best[cid] = cand
    return best


def judge(claim: dict[str, Any], value: Any) -> bool:
    """Whether ``value`` reproduces ``claim`` under its comparison rule."""
    p, tol, how = claim["paper_value"], claim["tolerance"], claim["compare"]
    if how == "bool":
        return bool(value)
    v = float(value)
    if math.isnan(v):
        return False
    if how == "abs":
        return abs(v - p) <= tol + 1e-12
    if how == "min":
        return v >= p - tol - 1e-12
    return v <= p + tol + 1e-12


def status_table(paper: str, include_smoke: bool = False):
    """One row per claim: the paper's value, ours, the budget, the status and its reason."""
    import pandas as pd

    rows = []
    meas = load_measurements(paper, include_smoke=include_smoke)
    for c in load_claims(paper):
        m = meas.get(c["claim_id"])
        ours, budget, reason = None, "", ""
        if m is None or m["value"] is None:
            status = "not run"
            # a notebook's note on its own (unmeasured) record is the newer word: the ledger's
            # reason ("data not available offline") is not true where the data were loaded
            reason = (m or {}).get("note") or c["not_run_reason"] or "no recorded measurement"
        elif m["budget"] == "smoke":
            ours, budget, status = m["value"], "smoke", "not run"
            reason = "only a smoke-budget number (meaningless)"
        else:
            ours, budget = m["value"], m["budget"]
            status = "reproduced" if judge(c, ours) else "not reproduced"
            reason = m.get("note", "")
        rows.append({
            "claim": c["claim_id"], "where": c["where"], "metric": c["metric"],
            "paper": c["paper_value"], "ours": ours, "budget": budget, "status": status,
            "note": reason,
        })
    return pd.DataFrame(rows)


def summary(papers: list[str]) -> Any:
    """Counts of reproduced / not reproduced / not run per paper (rows) and in total."""
    import pandas as pd

    rows = []
    for p in papers:
        if not claims_path(p).exists():
            continue
        t = status_table(p)
        rows.append({"paper": p, "claims": len(t),
                     **{s: int((t["status"] == s).sum()) for s in STATUSES}})
    df = pd.DataFrame(rows, columns=["paper", "claims", *STATUSES])
    if len(df):
        total = df[["claims", *STATUSES]].sum()
        df.loc[len(df)] = {"paper": "all", **total.to_dict()}
    return df
