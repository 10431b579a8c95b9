"""Session-wide fixtures: registered here so that pytest builds each one once per session, not per module."""

from trainer_fixtures import curated  # noqa: F401 - the curated tiny `clips` table and tiny frozen models
