"""Run hygiene: a run directory kept whole through kills, resumes and bad input.

atomic.py (writes that land whole or not at all), strict_json.py (no NaN in a results file),
textfile.py (one opener for data files, and a file's sha256), interrupt.py (Ctrl-C finishes the
step), history.py (one line a step), identity.py (a run resumes only under its settings),
preflight.py (a checkpoint directory checked in milliseconds, before minutes of work),
runlock.py (one writer per run directory).
"""
