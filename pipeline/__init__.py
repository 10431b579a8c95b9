"""Curation on Ray Data into Lance (`mfm curate`): raw videos and images -> tables `clips` and `sources`.

contract/ (the Lance contract: tables, codecs, buckets, frames; the only part other packages import),
config.py (typed YAML), inputs.py (listing through fsspec), stages/ (one Curator-style stage per file), ops/
(the math: media I/O, shots, blur, motion), engine.py (Ray Data operators and the driver's commits),
commits.py (crash-safe writes and resume), progress.py, report.py, cli.py.
"""
