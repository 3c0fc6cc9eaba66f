"""The commands behind run.py: one module a command, each with `run(args)`.

run.py parses the arguments and dispatches; settings.py fills the hardware budget and checks every
input before any slow step.
"""
