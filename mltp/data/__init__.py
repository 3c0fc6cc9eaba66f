"""The training data: sources.py (readers of the train splits), mixture.py (decontaminated,
capped, shuffled), userdata.py (`--train-data`, your own pairs), manifest.py (every data file
checked against MANIFEST.md before a run reads it).
"""
