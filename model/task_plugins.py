"""Tasks of your own: the one extension point that adds a task to everything that reads the task registry.

A task is four table entries, and registering one fills all four at once, after checking them:

- `model.tasks.TASKS`: the `Task` (id, prompt name, media, condition kind name, generation or manipulation,
  training weight, ...); the task sampler, `mfm tasks`, `mfm generate` and the benchmark builder read it;
- `model.conditions.CONDITION_KINDS`: the kind's `ConditionKind(draw, apply)`, how the condition's
  parameters are drawn from a generator and how they turn a clip into pixels (before masking) and a mask;
  a task may reuse a built-in kind (`kind=None`, its `Task.condition` naming one);
- `model.task_inputs.USER_INPUTS`: what `mfm generate` takes from the user's files; by default one file of
  the task's media, given whole (a manipulation task's input is its condition as it is);
- `model.task_sampling.QUALIFIERS`: an optional rule a clip must pass to train the task, beyond fitting the
  task's media and frame count (`Task.min_frames`).

Two ways in. From Python: `register_task(Task(...), kind=ConditionKind(...), user_inputs=UserInputs(...))`.
From a module of yours, named in a training config (`tasks: {plugins: [...]}`), with `--task-plugin` on
`mfm tasks`, `mfm generate` and `mfm benchmark`, or in the environment (`MFM_TASK_PLUGINS`, entries
separated by the path separator ":"): the module defines `TASK_PLUGINS`, a list of `TaskPlugin`, and
`load_task_plugins` registers them. A module is named by its dotted name (importable from `sys.path`) or by
the path of its .py file. Loading the same module twice, by either name, registers its tasks once.
`model/task_examples/deblur.py` is the worked example (video deblurring).

Registration never changes a built-in task: ids, prompt names and kind names must be new. A bad task raises
`TaskRegistrationError` (a ValueError) that names the task and the problem.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import get_args

from model.conditions import CONDITION_KINDS, Clip, ConditionKind
from model.task_inputs import USER_INPUTS, UserInputs
from model.task_sampling import QUALIFIERS
from model.tasks import TASKS, Media, Task

ENV_VAR = "MFM_TASK_PLUGINS"
MODULE_ATTRIBUTE = "TASK_PLUGINS"
MEDIA: tuple[str, ...] = get_args(Media)  # ("image", "video")
_ID = re.compile(r"[a-z][a-z0-9_]*")


class TaskRegistrationError(ValueError):
    """A task of your own that cannot be registered; the message names the task and what is wrong."""


@dataclass(frozen=True)
class TaskPlugin:
    """One task of your own: the task, and what it adds to the other tables."""

    task: Task
    kind: ConditionKind | None = None  # the kind `task.condition` names; None: reuse a registered kind
    user_inputs: UserInputs | None = None  # what `mfm generate` takes; None: one file of the task's media
    qualifies: Callable[[Clip], bool] | None = None  # extra training rule on a clip; None: any clip that fits


_PLUGINS: dict[str, TaskPlugin] = {}  # task id -> the plugin that registered it


# --- registration -----------------------------------------------------------------------------------------


def register_task(
    task: Task,
    kind: ConditionKind | None = None,
    user_inputs: UserInputs | None = None,
    qualifies: Callable[[Clip], bool] | None = None,
) -> Task:
    """Add `task` to the registry (see the module docstring); registering the very same plugin again does
    nothing. Raises TaskRegistrationError naming the problem."""
    return register_plugin(TaskPlugin(task, kind, user_inputs, qualifies))


def register_plugin(plugin: TaskPlugin) -> Task:
    """`register_task` for a `TaskPlugin`."""
    if not isinstance(plugin, TaskPlugin):
        raise TaskRegistrationError(f"expected a model.task_plugins.TaskPlugin; got {type(plugin).__name__}")
    task = plugin.task
    if not isinstance(task, Task):
        raise TaskRegistrationError(f"TaskPlugin.task must be a model.tasks.Task; got {type(task).__name__}")
    if _PLUGINS.get(task.id) == plugin:
        return TASKS[task.id]  # the same plugin again (a module loaded twice)
    _check_task(task)
    kind = _check_kind(task, plugin.kind)
    inputs = _check_user_inputs(task, plugin.user_inputs)
    if plugin.qualifies is not None and not callable(plugin.qualifies):
        raise TaskRegistrationError(f"task {task.id}: qualifies must be a function of a Clip returning a bool")
    TASKS[task.id] = task
    CONDITION_KINDS.setdefault(task.condition, kind)
    USER_INPUTS[task.id] = inputs
    if plugin.qualifies is not None:
        QUALIFIERS[task.id] = plugin.qualifies
    _PLUGINS[task.id] = plugin
    return task


def _check_task(task: Task) -> None:
    tid = task.id
    if not isinstance(tid, str) or not _ID.fullmatch(tid):
        raise TaskRegistrationError(f"task id {tid!r}: use lower-case letters, digits and _, starting with a letter "
                                    "(it names output files and benchmark rows)")  # fmt: skip
    if not isinstance(task.prompt_name, str) or not task.prompt_name.strip() or "#" in task.prompt_name:
        raise TaskRegistrationError(f"task {tid}: prompt name {task.prompt_name!r} must be words without '#' "
                                    "(it follows '#task: ' in the prompt)")  # fmt: skip
    for other in TASKS.values():
        if tid in (other.id, other.release_id):
            raise TaskRegistrationError(f"task id {tid!r} is already taken by task {other.id} "
                                        f"({other.prompt_name}): choose another id")  # fmt: skip
        if task.release_id is not None and task.release_id in (other.id, other.release_id):
            raise TaskRegistrationError(f"task {tid}: release id {task.release_id!r} is already task {other.id}'s")
        if task.prompt_name == other.prompt_name:
            raise TaskRegistrationError(f"task {tid}: prompt name {task.prompt_name!r} is already task {other.id}'s "
                                        "(the prompt's task name is how the model tells tasks apart)")  # fmt: skip
    if task.media not in MEDIA:
        raise TaskRegistrationError(f"task {tid}: unknown media {task.media!r}; choose one of {', '.join(MEDIA)}")
    _check_weight(task)
    for name in ("first_frames", "last_frames"):
        low, high = getattr(task, name)
        if not 0 <= low <= high:
            raise TaskRegistrationError(f"task {tid}: {name} must be (fewest, most) with 0 <= fewest <= most; "
                                        f"got {(low, high)}")  # fmt: skip
    if task.media == "image" and (task.first_frames[1] or task.last_frames[1]):
        raise TaskRegistrationError(f"task {tid}: an image task has no given frame spans")


def _check_weight(task: Task) -> None:
    w = task.weight
    if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
        raise TaskRegistrationError(f"task {task.id}: weight must be a number > 0 (its relative training frequency "
                                    f"among the tasks a clip qualifies for); got {w!r}")  # fmt: skip


def _check_kind(task: Task, kind: ConditionKind | None) -> ConditionKind:
    name = task.condition
    known = ", ".join(CONDITION_KINDS)
    if kind is None:
        if name not in CONDITION_KINDS:
            raise TaskRegistrationError(f"task {task.id}: unknown condition kind {name!r}; pass kind=ConditionKind("
                                        f"draw, apply) to add it, or name one of {known}")  # fmt: skip
        return CONDITION_KINDS[name]
    if not isinstance(kind, ConditionKind) or not (callable(kind.draw) and callable(kind.apply)):
        raise TaskRegistrationError(f"task {task.id}: kind must be ConditionKind(draw, apply) with two functions")
    if not isinstance(name, str) or not _ID.fullmatch(name):
        raise TaskRegistrationError(f"task {task.id}: condition kind name {name!r}: use lower-case letters, digits, _")
    if name in CONDITION_KINDS and CONDITION_KINDS[name] is not kind:
        raise TaskRegistrationError(f"task {task.id}: condition kind {name!r} already exists; give your kind a new "
                                    "name, or pass kind=None to reuse the existing one")  # fmt: skip
    return kind


def _check_user_inputs(task: Task, inputs: UserInputs | None) -> UserInputs:
    if inputs is None:
        if task.condition == "none":
            return UserInputs((), "no input file, only a prompt")
        return UserInputs((task.media,), f"one {task.media}")
    if not isinstance(inputs, UserInputs):
        raise TaskRegistrationError(f"task {task.id}: user_inputs must be a model.task_inputs.UserInputs")
    bad = [m for m in inputs.media if m not in MEDIA]
    if bad:
        raise TaskRegistrationError(f"task {task.id}: user_inputs media {bad} not among {', '.join(MEDIA)}")
    return inputs


def unregister_task(task_id: str) -> None:
    """Remove a task of your own (and its kind, when no other task uses it); the 16 built-in tasks stay."""
    if task_id not in _PLUGINS:
        raise TaskRegistrationError(f"task {task_id!r} was not registered by a plugin: built-in tasks stay")
    plugin = _PLUGINS.pop(task_id)
    del TASKS[task_id], USER_INPUTS[task_id]
    QUALIFIERS.pop(task_id, None)
    kind = plugin.task.condition
    if plugin.kind is not None and not any(t.condition == kind for t in TASKS.values()):
        del CONDITION_KINDS[kind]


def set_task_weights(weights: dict[str, float]) -> None:
    """Replace the training weights of the named tasks (e.g. train more of your own task); each must be > 0."""
    for task_id, weight in weights.items():
        if task_id not in TASKS:
            raise TaskRegistrationError(f"task weight for unknown task {task_id!r}; known: {', '.join(TASKS)}")
        task = replace(TASKS[task_id], weight=weight)
        _check_weight(task)
        TASKS[task_id] = task


def plugin_tasks() -> list[str]:
    """Ids of the tasks plugins registered, in registration order."""
    return list(_PLUGINS)


@contextmanager
def registry_snapshot() -> Iterator[None]:
    """Restore every task table on exit (tests and notebooks register tasks inside one)."""
    tables = (TASKS, CONDITION_KINDS, USER_INPUTS, QUALIFIERS, _PLUGINS)
    saved = [dict(t) for t in tables]
    try:
        yield
    finally:
        for table, copy in zip(tables, saved):
            table.clear()
            table.update(copy)


# --- loading plugin modules ------------------------------------------------------------------------------


def plugin_specs(given: Iterable[str] = ()) -> list[str]:
    """The modules named in MFM_TASK_PLUGINS, then `given`, without repeats."""
    env = [s for s in os.environ.get(ENV_VAR, "").split(os.pathsep) if s.strip()]
    return list(dict.fromkeys([*env, *given]))


def load_task_plugins(specs: Iterable[str]) -> list[Task]:
    """Import each module (a dotted name, or a path to a .py file) and register its `TASK_PLUGINS`;
    the registered tasks. Raises TaskRegistrationError naming the module."""
    tasks = []
    for spec in specs:
        module = _import(spec)
        plugins = getattr(module, MODULE_ATTRIBUTE, None)
        if not isinstance(plugins, list | tuple) or not plugins:
            raise TaskRegistrationError(f"task plugin {spec!r} defines no {MODULE_ATTRIBUTE} "
                                        "(a list of model.task_plugins.TaskPlugin)")  # fmt: skip
        for plugin in plugins:
            try:
                tasks.append(register_plugin(plugin))
            except TaskRegistrationError as e:
                raise TaskRegistrationError(f"task plugin {spec!r}: {e}") from None
    return tasks


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _loaded_from(path: Path) -> ModuleType | None:
    """The module already imported from `path`, under any name."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return module
    return None


def _import(spec: str) -> ModuleType:
    try:
        if not _is_path(spec):
            found = importlib.util.find_spec(spec)
            if found is None:
                raise ModuleNotFoundError(f"no module named {spec!r} on sys.path")
            origin = Path(found.origin).resolve() if found.origin else None
            return (_loaded_from(origin) if origin else None) or importlib.import_module(spec)
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such file {path}")
        if module := _loaded_from(path):
            return module
        stem = re.sub(r"\W", "_", path.stem)
        name = f"mfm_task_plugins.{stem}_{abs(hash(str(path))):x}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    except (ImportError, FileNotFoundError, SyntaxError) as e:
        raise TaskRegistrationError(f"task plugin {spec!r}: cannot import it: {e}") from e


# --- command lines --------------------------------------------------------------------------------------

PLUGIN_HELP = (f"a module of tasks of your own (dotted name or .py path) defining {MODULE_ATTRIBUTE}; "
               f"repeat for more; {ENV_VAR} adds more")  # fmt: skip


def add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-plugin", action="append", default=[], metavar="MODULE", help=PLUGIN_HELP)


def load_plugins_from_argv(argv: Sequence[str]) -> list[Task]:
    """Load the plugins a command line names (`--task-plugin`, anywhere in it) and MFM_TASK_PLUGINS: commands
    call this before they build their parsers, so help texts and choices list the new tasks."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_plugin_argument(p)
    known, _ = p.parse_known_args(list(argv))
    return load_task_plugins(plugin_specs(known.task_plugin))
