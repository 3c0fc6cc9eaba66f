"""Which tests are adjusted together, from a study's pre-registration when it has one.

A study folder may hold `registration.json`, committed before its runs (results/cpu-study2-240steps/
has one). It names the primary family: comparisons (configuration a vs b), each with ONE registered
test, "equivalence" (TOST against the margin) or "difference" (two-sided), over the registered
score families; those tests are Holm-adjusted together (Holm 1979: the family-wise error rate).
Every other test in the report, each comparison's other test included, is secondary: its
difference p-values and its equivalence p-values are each Benjamini-Hochberg-adjusted (Benjamini &
Hochberg 1995: the false discovery rate), and the report labels them secondary.
Without a registration (the older folders), every verdict of the report is one family, as before
the registrations: the difference p-values Holm-adjusted together, the equivalence p-values too,
and the report says that nothing was named primary.
The registration's margin and alpha must be eval.verdict's: it was written against them.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .stats import benjamini_hochberg, holm
from .verdict import ALPHA, EQUIVALENCE_MARGIN, corrected, provisional, testable

REGISTRATION = "registration.json"


class RegistrationError(ValueError):
    """A registration.json the report cannot read or that contradicts eval/verdict.py: one line, naming the file."""
TESTS = {"equivalence": "p_tost", "difference": "p_value"}  # registered test -> the record's p


def load_registration(folder: Path) -> dict | None:
    """The folder's registration, checked, or None; RegistrationError in one line when it is unusable."""
    path = Path(folder) / REGISTRATION
    if not path.exists():
        return None
    try:
        reg = json.loads(path.read_text(encoding="utf-8"))
        tests = reg["primary"]["tests"]
        bad = [t for t in tests if t["test"] not in TESTS or not t.get("a") or not t.get("b")]
        margin, alpha = reg["margin"], reg["alpha"]
        families = list(reg["families"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise RegistrationError(f"{path}: not a registration this report can read ({type(e).__name__}: {e})") from None
    if bad or reg["primary"].get("correction") != "holm" or reg["secondary"].get("correction") != "benjamini-hochberg":
        raise RegistrationError(f"{path}: the primary tests must each name a, b and a test of {sorted(TESTS)}, with "
                         f"holm for the primary family and benjamini-hochberg for the secondary")
    if margin != EQUIVALENCE_MARGIN or alpha != ALPHA:
        raise RegistrationError(f"{path}: registered margin {margin} and alpha {alpha}, but eval/verdict.py fixes "
                         f"{EQUIVALENCE_MARGIN} and {ALPHA}")
    commit, date = registration_commit(path)
    return reg | {"families": families, "path": str(path), "commit": commit, "commit_date": date}


def registration_commit(path: Path) -> tuple[str, str | None]:
    """(short hash, ISO date) of the commit that last changed the file, or ("uncommitted", None)
    when it has changes since, was never committed, or there is no git to ask."""
    path = Path(path).resolve()
    git = ["git", "-C", str(path.parent)]
    try:
        dirty = subprocess.run(git + ["status", "--porcelain", "--", path.name], capture_output=True, text=True, check=True)
        log = subprocess.run(git + ["log", "-1", "--format=%h %cI", "--", path.name], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted", None
    if dirty.stdout.strip() or not log.stdout.strip():
        return "uncommitted", None
    commit, date = log.stdout.split()
    return commit, date


def commit_words(registration: dict) -> str:
    """How a report names the registration's commit: "commit <hash> of <day>" or "uncommitted"."""
    if registration["commit"] == "uncommitted":
        return "uncommitted"
    return f"commit {registration['commit']} of {registration['commit_date'][:10]}"


def primary_test(v: dict, registration: dict | None) -> str | None:
    """The test the registration names for this verdict record, or None (secondary or unregistered)."""
    for t in (registration or {}).get("primary", {}).get("tests", []):
        if (t["a"], t["b"]) == (v["a"], v["b"]) and v["family"] in registration["families"]:
            return t["test"]
    return None


def _adjust(records: list[tuple[dict, str]], method, name: str) -> dict:
    # records: (verdict record, test) pairs; each record gets the adjusted p of that test and its family.
    made = [(v, test) for v, test in records if testable(v["verdict"]) and v[TESTS[test]] is not None]
    for (v, test), p in zip(made, method([v[TESTS[test]] for v, test in made])):
        v[TESTS[test] + "_adj"], v[TESTS[test] + "_family"] = p, name
    return {"name": name, "tests": len(made)}


def adjust(verdicts: list[dict], registration: dict | None) -> list[dict]:
    """Set every record's adjusted p-values, role and corrected verdict; return the families made."""
    for v in verdicts:
        v["primary_test"] = primary_test(v, registration)
        v["role"] = "primary" if v["primary_test"] else ("secondary" if registration else "one family")
        v.update(p_value_adj=None, p_tost_adj=None, p_value_family=None, p_tost_family=None)
    if registration is None:
        families = [_adjust([(v, test) for v in verdicts], holm, f"every verdict's {test} test (Holm)")
                    for test in TESTS]
    else:
        primary = [(v, v["primary_test"]) for v in verdicts if v["primary_test"]]
        families = [_adjust(primary, holm, "primary (Holm)")]
        families += [_adjust([(v, test) for v in verdicts if v["primary_test"] != test], benjamini_hochberg,
                             f"secondary {test} tests (Benjamini-Hochberg)") for test in TESTS]
    for v in verdicts:
        v["verdict_corrected"] = corrected(v, (v["primary_test"],) if v["primary_test"] else tuple(TESTS))
        v["provisional"] = provisional(v)
    return families
