"""The login gate every page passes first (app.py calls `admit()` before navigation).

Served locally (the default) it lets everyone in and shows nothing. In classroom mode
(`pruneviz serve --classroom`) a session sees only the login until it gives the access
code: in the link the teacher hands out (`/?token=CODE`), typed into the form, or through
Streamlit's OpenID Connect login when the server has one configured. Nothing of the
pages runs before that: no model is loaded, no widget exists, no file can be uploaded.
Each admitted session keeps its own workspace (as every tab does) and its own exports
folder; the name a student gives is who its long jobs are queued for.

A server that listens beyond this machine without classroom mode, or in classroom mode
without a usable secret, admits nobody and says why (`data.access.server_access`).
Wrong codes are slowed down: one second per wrong code, a one-minute lock after
`MAX_FAILURES` in one session, and at most `SERVER_FAILURES` wrong codes a minute on the
whole server.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from pruneviz.app.keys import ADMITTED_KEY, EXPORTS_SUBFOLDER_KEY, LOGIN_FAILURES_KEY, USER_KEY
from pruneviz.app.state import app_arguments
from pruneviz.data.access import Access, matches, oidc_configured, server_access
from pruneviz.i18n import _

TOKEN_PARAM = "token"  # noqa: S105 - the query parameter's name
MAX_FAILURES = 5  # wrong codes in one session before it is locked for LOCK_S
LOCK_S = 60.0
SERVER_FAILURES = 30  # wrong codes a minute on the whole server before everyone waits
WRONG_CODE_DELAY_S = 1.0
NAME = re.compile(r"[^A-Za-z0-9._-]+")

_failures: deque[float] = deque()  # when the server's recent wrong codes came
_failures_lock = threading.Lock()


@st.cache_resource(show_spinner=False)
def _oidc() -> bool:
    """Whether Streamlit's OpenID Connect login is configured (read once per process)."""
    return oidc_configured((Path.cwd(), Path.home()))


def access() -> Access:
    """This server's access rules: its start arguments, environment and address."""
    address = str(st.get_option("server.address") or "")
    return server_access(app_arguments(), os.environ, address, _oidc())


def session_tag() -> str:
    """A short tag of this browser session (the start of Streamlit's session id)."""
    ctx = get_script_run_ctx()
    return ctx.session_id[:8] if ctx is not None else "local"


def _let_in(name: str) -> None:
    """Admit this session as `name`; its exports go into a folder of its own (the name and
    the session's tag: no two sessions write into one folder)."""
    clean = NAME.sub("-", name.strip())[:40].strip("-.") or "student"
    st.session_state[USER_KEY] = clean
    st.session_state[EXPORTS_SUBFOLDER_KEY] = f"classroom/{clean}-{session_tag()}"
    st.session_state[ADMITTED_KEY] = True


def _server_locked() -> bool:
    now = time.monotonic()
    with _failures_lock:
        while _failures and now - _failures[0] > 60.0:
            _failures.popleft()
        return len(_failures) >= SERVER_FAILURES


def _wrong_code() -> None:
    with _failures_lock:
        _failures.append(time.monotonic())
    failures = list(st.session_state.get(LOGIN_FAILURES_KEY, []))
    failures.append(time.monotonic())
    st.session_state[LOGIN_FAILURES_KEY] = failures[-MAX_FAILURES:]
    time.sleep(WRONG_CODE_DELAY_S)


def _session_locked() -> float:
    """Seconds this session must still wait after too many wrong codes (0: none)."""
    failures = st.session_state.get(LOGIN_FAILURES_KEY, [])
    if len(failures) < MAX_FAILURES:
        return 0.0
    return max(0.0, LOCK_S - (time.monotonic() - float(failures[-MAX_FAILURES])))


def admit() -> None:
    """Let this session through, or show only why it may not enter (or the login) and stop
    the run."""
    rules = access()
    if rules.refused:
        st.error(rules.refused, icon=":material/block:")
        st.stop()
    if not rules.classroom or st.session_state.get(ADMITTED_KEY):
        return
    token = st.query_params.get(TOKEN_PARAM)
    if token and rules.secret is not None and not _server_locked() \
            and not _session_locked():
        if matches(token, rules.secret):
            _let_in(f"student-{session_tag()}")
            return
        _wrong_code()
    if rules.oidc and st.user.is_logged_in:
        _let_in(str(st.user.get("email") or st.user.get("name") or "student"))
        return
    _login_form(rules, wrong_link=bool(token))
    st.stop()


def _login_form(rules: Access, *, wrong_link: bool) -> None:
    st.title(_("pruneviz — classroom"))
    st.markdown(_("This pruneviz server is shared by a class. Enter the access code your "
                  "teacher gave you (or open the link with the code in it)."))
    if wrong_link:
        st.error(_("The access code in this link is not right: ask your teacher for the link "
                   "again."))
    if rules.oidc:
        st.button(_("Log in"), type="primary", on_click=st.login)
    if rules.secret is None:
        return
    wait = _session_locked()
    if wait > 0 or _server_locked():
        st.warning(_("Too many wrong codes: try again in {seconds} seconds.")
                   .format(seconds=f"{max(wait, 60.0):.0f}"))
        return
    with st.form("pv_login"):
        name = st.text_input(_("Your name"), max_chars=40,
                             help=_("Names your exports folder and your place in the queue "
                                    "for long jobs; it is not checked."))
        code = st.text_input(_("Access code"), type="password", max_chars=200)
        sent = st.form_submit_button(_("Enter"), type="primary")
    if sent:
        if matches(code, rules.secret):
            _let_in(name or f"student-{session_tag()}")
            st.rerun()
        _wrong_code()
        if _session_locked():
            st.rerun()  # the next run says how long to wait, and offers no form
        st.error(_("That access code is not right."))
