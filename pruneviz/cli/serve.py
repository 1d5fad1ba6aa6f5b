"""The `serve` verb: start the app, on this machine only, or for a room (`--classroom`).

It runs `streamlit run app.py` with the project's server settings
(`.streamlit/config.toml`, applied wherever the command is started from) and the app's
arguments (the model and data options every verb takes). Served beyond this machine it
needs `--classroom` and an access secret (`data/access.py`): without one it refuses to
start, before anything listens.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import pruneviz
from pruneviz.data.access import (
    CLASSROOM_FLAG,
    MAKE_ONE_HINT,
    SECRET_ENV,
    is_local,
    oidc_configured,
    secret_from,
)
from pruneviz.errors import PrunevizError

ROOT = Path(pruneviz.__file__).resolve().parents[1]
APP = ROOT / "app.py"
CONFIG = ROOT / ".streamlit" / "config.toml"
EVERY_ADDRESS = ("0.0.0.0", "::", "")  # noqa: S104 - recognised, not bound
# The app's own options, passed through when given (see data.sources.add_source_arguments).
APP_OPTIONS = ("model", "weights", "data", "train_data", "task", "metric", "label_column",
               "eval_subset", "device", "load_timeout")
FILE_OPTIONS = ("weights", "data", "train_data", "metric")  # may name a file: made absolute
LOCAL_HOSTS = ("localhost", "127.0.0.1")  # what a browser on this machine sends as Host
OWN_SETTINGS = ("server.address", "server.port", "server.allowedHosts", "browser.serverAddress")


def config_flags(config: Path) -> list[str]:
    """`--section.option value` flags for every setting of the project's config file but
    those `serve` sets itself (a list setting is given once per value, as Streamlit's
    command line wants)."""
    settings: dict[str, Any] = tomllib.loads(config.read_text(encoding="utf-8"))
    flags: list[str] = []
    for section, table in settings.items():
        for name, value in table.items():
            if f"{section}.{name}" in OWN_SETTINGS:
                continue
            values = value if isinstance(value, list) else [value]
            for one in values:
                text = str(one).lower() if isinstance(one, bool) else str(one)
                flags += [f"--{section}.{name}", text]
    return flags


def absolute(value: str) -> str:
    """A file option's value with its file made absolute (`file.py:function` and
    `mnist:FOLDER` forms included), so the app finds it whatever its working folder."""
    head, sep, tail = value.rpartition(":")
    if sep and head and not Path(value).exists():
        if Path(head).suffix == ".py":
            return f"{Path(head).resolve()}:{tail}"
        if Path(tail).exists():  # mnist:FOLDER, idx:FOLDER ...
            return f"{head}:{Path(tail).resolve()}"
        return value
    return str(Path(value).resolve()) if Path(value).exists() else value


def app_arguments(args: argparse.Namespace, *, classroom: bool) -> list[str]:
    """The arguments after `--` of `streamlit run app.py -- ...`."""
    found: list[str] = []
    for option in APP_OPTIONS:
        value = getattr(args, option, None)
        if value is None or (option == "device" and value == "auto"):
            continue
        text = str(value)
        if option == "model" or option in FILE_OPTIONS:
            text = absolute(text)
        found += [f"--{option.replace('_', '-')}", text]
    if getattr(args, "workspace", None):
        found += ["--workspace", str(Path(args.workspace).expanduser().resolve())]
    return found + ([CLASSROOM_FLAG] if classroom else [])


def allowed_hosts(args: argparse.Namespace) -> list[str]:
    """The Host names the server answers: this machine's own names when it listens on
    this machine only; else the names given, or its address; "*" (any) when it listens
    on every interface and no name was given."""
    if is_local(args.address):
        return list(dict.fromkeys([*LOCAL_HOSTS, args.address]))
    if args.host_name:
        return list(args.host_name)
    return ["*"] if args.address in EVERY_ADDRESS else [args.address]


def serve_command(args: argparse.Namespace,
                  env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The command that starts the server and its environment, or a PrunevizError saying
    why it must not start."""
    if not APP.is_file():
        raise PrunevizError(f"the app is not next to the package ({APP} is missing): run "
                            "`serve` from a checkout of pruneviz")
    secret = secret_from(env, args.secret_file)
    if args.classroom:
        if secret is None and not oidc_configured((Path.cwd(), Path.home())):
            raise PrunevizError(
                "refusing to serve a classroom without an access secret: set "
                f"{SECRET_ENV} (at least 12 characters; make one with {MAKE_ONE_HINT}), "
                "give --secret-file FILE, or configure Streamlit's OpenID Connect login in "
                ".streamlit/secrets.toml (see docs/classroom.md)")
    elif not is_local(args.address):
        raise PrunevizError(
            f"--address {args.address!r} serves beyond this machine: that needs "
            "--classroom and an access secret (see docs/classroom.md)")
    command = [sys.executable, "-m", "streamlit", "run", str(APP), *config_flags(CONFIG),
               "--server.address", args.address, "--server.port", str(args.port),
               "--browser.serverAddress", "localhost" if is_local(args.address)
               else (args.host_name[0] if args.host_name else args.address)]
    for host in allowed_hosts(args):
        command += ["--server.allowedHosts", host]
    command += ["--", *app_arguments(args, classroom=args.classroom)]
    child_env = dict(env)
    if secret is not None:
        child_env[SECRET_ENV] = secret
    return command, child_env


def cmd_serve(args: argparse.Namespace) -> int:
    """Check the settings, say where to open the app, and become the server."""
    command, env = serve_command(args, dict(os.environ))
    where = "localhost" if is_local(args.address) else (
        args.host_name[0] if args.host_name else
        "THIS-MACHINE" if args.address in EVERY_ADDRESS else args.address)
    url = f"http://{where}:{args.port}/"
    if args.classroom and SECRET_ENV in env:
        print(f"pruneviz: serving a classroom. Students open {url}?token=<the secret> or "
              f"type the secret at {url}", file=sys.stderr)
    else:
        print(f"pruneviz: open {url}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)  # noqa: S606 - our own command, no shell
