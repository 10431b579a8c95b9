"""Worked examples of tasks of your own (see `model.task_plugins`); none is registered unless loaded."""
