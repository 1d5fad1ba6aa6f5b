"""Classroom mode: the access rules (data/access.py), `pruneviz serve` refusing to start
without a secret, and the app's login gate (app/login.py) letting nothing of the pages run
before a session gives the code."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.apptest import APP, start
from streamlit.testing.v1 import AppTest

from pruneviz.app import login, state
from pruneviz.app.keys import ADMITTED_KEY, EXPORTS_SUBFOLDER_KEY, USER_KEY, WORKSPACE_KEY
from pruneviz.cli import main
from pruneviz.cli.parser import build_parser
from pruneviz.cli.serve import config_flags, serve_command
from pruneviz.data.access import (
    MIN_SECRET,
    SECRET_ENV,
    digest,
    is_local,
    matches,
    oidc_configured,
    read_secret_file,
    server_access,
)
from pruneviz.errors import PrunevizError

SECRET = "correct-horse-battery"
ROOT = Path(__file__).resolve().parents[1]


# -- the rules ---------------------------------------------------------------------------------


def test_served_locally_without_classroom_mode_everyone_is_let_in() -> None:
    for address in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_local(address)
        rules = server_access([], {}, address, oidc=False)
        assert not rules.classroom
        assert rules.refused is None


@pytest.mark.parametrize("address", ["0.0.0.0", "", "192.168.1.20", "::", "example.org"])
def test_served_beyond_this_machine_without_classroom_mode_nobody_is(address: str) -> None:
    rules = server_access([], {SECRET_ENV: SECRET}, address, oidc=False)
    assert rules.refused is not None
    assert "--classroom" in rules.refused


@pytest.mark.parametrize("secret", ["", "short", " " * 20, "x" * (MIN_SECRET - 1)])
def test_classroom_mode_without_a_usable_secret_admits_nobody(secret: str) -> None:
    rules = server_access(["--classroom"], {SECRET_ENV: secret}, "0.0.0.0", oidc=False)
    assert rules.classroom
    assert rules.refused is not None
    assert "secret" in rules.refused


def test_classroom_mode_keeps_only_the_secrets_digest() -> None:
    rules = server_access(["--classroom"], {SECRET_ENV: f"  {SECRET}\n"}, "0.0.0.0",
                          oidc=False)
    assert rules.refused is None
    assert rules.secret == digest(SECRET)
    assert SECRET.encode() not in repr(rules).encode()
    assert matches(SECRET, rules.secret)
    for guess in ("", SECRET[:-1], SECRET + "x", SECRET.upper(), "x" * 5000):
        assert not matches(guess, rules.secret)


def test_openid_connect_alone_is_enough_for_a_classroom() -> None:
    rules = server_access(["--classroom"], {}, "0.0.0.0", oidc=True)
    assert rules.classroom
    assert rules.oidc
    assert rules.secret is None
    assert rules.refused is None


def test_openid_connect_counts_only_when_configured_and_usable(tmp_path: Path) -> None:
    folder = tmp_path / ".streamlit"
    folder.mkdir()
    assert not oidc_configured((tmp_path,))
    (folder / "secrets.toml").write_text("[auth]\nredirect_uri = 'x'\n")
    assert not oidc_configured((tmp_path,))  # no cookie secret
    (folder / "secrets.toml").write_text("[auth\nbroken")
    assert not oidc_configured((tmp_path,))
    (folder / "secrets.toml").write_text(
        "[auth]\nredirect_uri = 'http://h/oauth2callback'\ncookie_secret = 'c'\n")
    try:
        import authlib  # noqa: F401
    except ImportError:
        assert not oidc_configured((tmp_path,))  # Streamlit's login needs Authlib
    else:
        assert oidc_configured((tmp_path,))


def test_a_secret_file_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "secret"
    good.write_text(f"{SECRET}\nanything after the first line\n")
    assert read_secret_file(good) == SECRET
    (tmp_path / "weak").write_text("abc\n")
    (tmp_path / "huge").write_text("x" * 100_000)
    for name in ("weak", "huge", "missing"):
        with pytest.raises(PrunevizError):
            read_secret_file(tmp_path / name)


# -- `pruneviz serve` --------------------------------------------------------------------------


def serve_args(*argv: str) -> object:
    return build_parser().parse_args(["serve", *argv])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_serve_refuses_a_classroom_without_a_secret_before_anything_listens(
        tmp_path: Path) -> None:
    """From outside, as a teacher would start it: exit 2, one clear line, no server."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    env["HOME"] = str(tmp_path)  # no secrets.toml there
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pruneviz", "serve", "--classroom", "--address", "0.0.0.0",
         "--port", str(port)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 2
    assert "refusing to serve a classroom without an access secret" in done.stderr
    assert SECRET_ENV in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not listening(port)
    assert time.monotonic() - started < 60


def test_serve_refuses_every_address_beyond_this_machine_without_classroom(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--address", "0.0.0.0"]) == 2
    assert "needs --classroom" in capsys.readouterr().err


def test_serve_refuses_a_weak_secret(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SECRET_ENV, "tooshort")
    assert main(["serve", "--classroom", "--address", "0.0.0.0"]) == 2
    assert f"needs at least {MIN_SECRET}" in capsys.readouterr().err


def test_serve_command_applies_the_projects_settings_and_passes_the_secret(
        tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    args = serve_args("--classroom", "--address", "0.0.0.0", "--port", "8600",
                      "--weights", str(weights),
                      "--host-name", "lab.example.org")
    command, env = serve_command(args, {SECRET_ENV: SECRET})  # type: ignore[arg-type]
    assert env[SECRET_ENV] == SECRET
    assert SECRET not in " ".join(command)  # never on a command line others can read
    after = command.index("--")
    flags, app_args = command[:after], command[after + 1:]
    assert app_args == ["--weights", str(weights), "--classroom"]
    pairs = list(zip(flags[5::2], flags[6::2], strict=False))
    assert ("--server.address", "0.0.0.0") in pairs
    assert ("--server.port", "8600") in pairs
    assert ("--server.allowedHosts", "lab.example.org") in pairs
    assert ("--server.allowedHosts", "localhost") not in pairs  # the config's, replaced
    assert ("--server.maxUploadSize", "200") in pairs  # the project's settings apply
    assert ("--server.enableXsrfProtection", "true") in pairs
    assert command[4] == str(ROOT / "app.py")


def test_serve_makes_relative_files_absolute(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text("def build():\n    pass\n")
    (tmp_path / "eval.npz").write_bytes(b"")
    args = serve_args("--model", "net.py:build", "--data", "eval.npz")
    command, env = serve_command(args, {})  # type: ignore[arg-type]
    app_args = command[command.index("--") + 1:]
    assert app_args == ["--model", f"{tmp_path / 'net.py'}:build",
                        "--data", str(tmp_path / "eval.npz")]
    assert SECRET_ENV not in env
    assert ("--server.address", "127.0.0.1") in list(itertools.pairwise(command))


def test_config_flags_skip_what_serve_sets_itself() -> None:
    flags = config_flags(ROOT / ".streamlit" / "config.toml")
    assert "--server.address" not in flags
    assert "--server.allowedHosts" not in flags
    assert flags[flags.index("--server.headless") + 1] == "true"


# -- the login gate (AppTest) ------------------------------------------------------------------


@pytest.fixture
def classroom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "LAUNCH_ARGV", ["app.py", "--classroom"])
    monkeypatch.setenv(SECRET_ENV, SECRET)


def only_the_login(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert [t.label for t in at.text_input] == ["Your name", "Access code"]
    assert WORKSPACE_KEY not in at.session_state  # no model was even opened
    assert not at.get("slider")
    assert not at.get("metric")
    assert not at.get("file_uploader")
    assert not at.get("selectbox")  # not even the sidebar's model picker


def test_without_the_code_a_session_gets_only_the_login(classroom: None) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    only_the_login(at)
    at.switch_page("app_pages/prune.py").run()  # a page's own URL does not get round it
    only_the_login(at)


def test_a_wrong_code_or_link_is_refused(classroom: None) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = SECRET + "x"
    at.run()
    only_the_login(at)
    assert any("link is not right" in e.value for e in at.error)
    at.text_input[0].input("Ada")
    at.text_input[1].input("not-the-code-at-all")
    at.button[0].click().run()
    only_the_login(at)
    assert any("not right" in e.value for e in at.error)


def test_the_code_typed_in_opens_the_app_with_a_folder_of_the_sessions_own(
        classroom: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEVIZ_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.text_input[0].input("Ada Lovelace/../x")
    at.text_input[1].input(SECRET)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.session_state[ADMITTED_KEY]
    assert at.session_state[USER_KEY] == "Ada-Lovelace-..-x"
    assert WORKSPACE_KEY in at.session_state
    assert at.get("metric")
    own = at.session_state[EXPORTS_SUBFOLDER_KEY]
    assert own.startswith("classroom/Ada-Lovelace-..-x-")
    assert "/" not in own[10:]


def test_the_link_with_the_code_opens_the_app(classroom: None) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = SECRET
    at.run()
    assert not at.exception, at.exception
    assert at.session_state[ADMITTED_KEY]
    assert at.get("metric")


def test_classroom_mode_without_a_secret_shows_only_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "LAUNCH_ARGV", ["app.py", "--classroom"])
    monkeypatch.delenv(SECRET_ENV, raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = "anything-at-all-here"
    at.run()
    assert not at.exception
    assert any("without a usable access secret" in e.value for e in at.error)
    assert not at.text_input
    assert WORKSPACE_KEY not in at.session_state


def test_served_locally_there_is_no_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    at = start("sample:digits_cnn", no_errors=True)
    assert "Access code" not in [t.label for t in at.text_input]
    assert at.get("metric")


def test_wrong_codes_lock_the_session_for_a_while(classroom: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login, "WRONG_CODE_DELAY_S", 0.0)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    for _ in range(login.MAX_FAILURES):
        at.text_input[1].input("wrong-code-again")
        at.button[0].click().run()
    assert any("Too many wrong codes" in w.value for w in at.warning)
    assert not at.text_input  # no form to try again with: not even the right code
    at.query_params["token"] = SECRET
    at.run()
    assert ADMITTED_KEY not in at.session_state


def test_served_locally_the_browsers_own_host_names_are_answered() -> None:
    """`make app`: a browser on this machine sends Host localhost or 127.0.0.1."""
    command, _ = serve_command(serve_args(), {})  # type: ignore[arg-type]
    hosts = [b for a, b in itertools.pairwise(command) if a == "--server.allowedHosts"]
    assert sorted(hosts) == ["127.0.0.1", "localhost"]
