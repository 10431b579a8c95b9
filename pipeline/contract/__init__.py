"""The Lance contract between curation and its readers, and the only part of pipeline/ that trainer/, benchmark/,
model/ and mfm/ import (tests/test_imports.py holds every package to that).

tables.py (schemas, versions, keys, `check_schema`), codecs.py (how columns hold video, depth, text embeddings
and latents), buckets.py (the aspect-ratio buckets both sides size samples by), frames.py (uint8 <-> [-1, 1],
the one resize and cover-crop).

Nothing is imported here, so `from pipeline.contract import buckets` needs neither pyarrow nor PyAV.
"""
