"""Functions from the user's own Python files: `path/to/file.py:name`.

A model factory, a data function and a metric function are all named this way. The
file is the user's own code, which they trust and ask us to run (like `python file.py`);
it is imported under a private module name so that it can never shadow a module of
ours or of the standard library. Every failure (no such file, a syntax error, an
exception while importing, no such function) is a PrunevizError naming the file.

Importing the file and calling its function run under a time limit (`LOAD_TIMEOUT_S`,
`--load-timeout`): code that never returns (waiting for a network, a prompt, an endless
loop) becomes a message naming the file and function instead of a hung command or tab.
The code runs in a thread that is waited for; Python cannot stop a thread, so one that
never returns keeps running in the background (a CLI command then exits; an app tab
gets the message, and the server should be restarted to stop it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from pruneviz.errors import PrunevizError


class UserFileError(PrunevizError, ValueError):
    """A `file.py:function` reference cannot be read, imported or called."""


LOAD_TIMEOUT_S = 120.0  # the longest a user's file may take to import, or a function to return
USER_MODULE_PREFIX = "pruneviz_user_"  # the private module names of the user's files


def set_load_timeout(seconds: float) -> None:
    """Change the time limit on the user's code (`--load-timeout`)."""
    global LOAD_TIMEOUT_S
    if not seconds > 0:
        raise UserFileError(f"--load-timeout must be a positive number of seconds, got "
                            f"{seconds}")
    LOAD_TIMEOUT_S = float(seconds)


def within_time(run: Callable[[], Any], doing: str) -> Any:
    """`run()`'s result (or exception), unless it takes more than LOAD_TIMEOUT_S: then a
    UserFileError saying that `doing` (e.g. "calling model.py:build") did not return."""
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(run())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            failure.append(exc)

    worker = threading.Thread(target=target, name="pruneviz-user-code", daemon=True)
    worker.start()
    worker.join(LOAD_TIMEOUT_S)
    if worker.is_alive():
        raise UserFileError(
            f"{doing} did not return within {LOAD_TIMEOUT_S:g} s; it may be waiting for a "
            "network, a prompt or a lock, or looping. Fix it, or allow more time with "
            "--load-timeout SECONDS")
    if failure:
        raise failure[0]
    return outcome[0]


def split_ref(ref: str, what: str) -> tuple[Path, str]:
    """Split `path/to/file.py:name` into the file and the function name."""
    path, sep, name = str(ref).rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise UserFileError(
            f"cannot read {what} reference {ref!r}: use path/to/file.py:function_name"
        )
    return Path(path).expanduser(), name


def is_file_ref(ref: str) -> bool:
    """Whether `ref` looks like `something.py:name` (not whether the file exists)."""
    path, sep, name = str(ref).rpartition(":")
    return bool(sep) and path.endswith(".py") and name.isidentifier()


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return ("it exits (sys.exit, or argparse reading this program's own arguments) "
                "when imported or called; put the script part of the file under "
                "`if __name__ == \"__main__\":`")
    return f"{type(exc).__name__}: {exc}; fix the file and try again"


def _import(path: Path) -> ModuleType:
    resolved = path.resolve()
    if not resolved.is_file():
        raise UserFileError(f"{path} does not exist (or is not a file); check the path")
    # One private module per file, so two files called model.py never collide.
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    module_name = f"{USER_MODULE_PREFIX}{resolved.stem}_{digest}"
    cached = sys.modules.get(module_name)
    if cached is not None:
        return cached
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise UserFileError(f"{path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    sys.modules[module_name] = module
    try:
        within_time(lambda: loader.exec_module(module), f"importing {path}")
    except UserFileError:
        del sys.modules[module_name]
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code may raise anything
        del sys.modules[module_name]
        raise UserFileError(f"importing {path} failed: {describe_failure(exc)}") from None
    return module


def import_file(path: Path) -> ModuleType:
    """The user's file `path`, imported once per process under its private module name
    (the same name in every process: a job's worker process imports the files a model's
    classes come from before it reads the model, see pruneviz.workflows.processes)."""
    return _import(path)


def load_callable(ref: str, what: str) -> Callable[..., Any]:
    """The function `name` from `file.py:name` (the file is imported once per process)."""
    path, name = split_ref(ref, what)
    module = _import(path)
    found = getattr(module, name, None)
    if found is None:
        public = sorted(n for n, v in vars(module).items()
                        if callable(v) and not n.startswith("_"))
        raise UserFileError(
            f"{path} has no function {name!r}"
            + (f"; it defines: {', '.join(public)}" if public else "")
        )
    if not callable(found):
        raise UserFileError(f"{path}:{name} is a {type(found).__name__}, not a function")
    return found  # type: ignore[no-any-return]


def call_user(ref: str, what: str, *args: Any, **kwargs: Any) -> Any:
    """Call `file.py:name` with `args` under the time limit; an exception inside it
    becomes a UserFileError."""
    function = load_callable(ref, what)
    try:
        return within_time(lambda: function(*args, **kwargs), f"the {what} {ref}")
    except UserFileError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code may raise anything
        raise UserFileError(f"the {what} {ref} failed: {describe_failure(exc)}") from None


__all__ = ["LOAD_TIMEOUT_S", "USER_MODULE_PREFIX", "UserFileError", "call_user",
           "describe_failure", "import_file", "is_file_ref", "load_callable", "set_load_timeout",
           "split_ref", "within_time"]
