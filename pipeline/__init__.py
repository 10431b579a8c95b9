"""Curation on Ray Data into Lance (`mfm curate`): raw videos and images -> tables `clips` and `sources`.

schema.py (the Lance contract, read by trainer/ too), config.py (typed YAML), inputs.py (listing through
fsspec), stages/ (one Curator-style stage per file), ops/ (the math: media I/O, shots, blur, motion),
engine.py (Ray Data operators and the driver's commits), tables.py (crash-safe writes and resume),
progress.py, report.py, cli.py.
"""
