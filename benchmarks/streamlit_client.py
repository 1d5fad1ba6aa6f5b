"""A small Streamlit websocket client that talks to a server as a browser tab does.

No browser and no new dependency: the `websockets` package (which Streamlit itself needs)
and Streamlit's own protobufs. The Streamlit version in use here (1.67) serves with
Starlette/uvicorn; Tornado is no longer installed, so `tornado.websocket` is not
available. What the browser does, and this client copies (see
streamlit/web/server/starlette/starlette_websocket.py and runtime/app_session.py):

1. GET / over plain HTTP: the server sets the `_streamlit_xsrf` cookie.
2. Open the websocket `/_stcore/stream` with the subprotocols `["streamlit", <the XSRF
   cookie's value>]`, the cookie sent back in a Cookie header, and an Origin header that
   names the server (same origin).
3. Send a `BackMsg.rerun_script` (a `ClientState`): the query string, and for the first
   run the page's URL path as `page_name` (an `st.navigation` app: "prune" for
   /prune) with an empty `page_script_hash`; later runs name the page by its hash.
4. Read `ForwardMsg`s. Each script run opens with `new_session` and ends with
   `script_finished`, both tagged with `metadata.run` (`script_run_id`, the fragment ids
   of a fragment run). Between them, `delta.new_element` messages carry the elements:
   a widget's proto has its `id`, `label`, default and (when `set_value`) the value
   that the script set.
5. A widget change is a new `rerun_script` whose `widget_states` hold every widget value
   the tab knows (not just the changed one), each in the field of its kind
   (`double_array_value` for a slider, `string_value` for a selectbox or radio, ...).
   A button click is `trigger_value=True`, sent once.
6. `auto_rerun` (a fragment's `run_every`) starts a timer that sends a fragment rerun
   (`fragment_id`, `is_auto_rerun=True`) every interval; every full run clears them.
7. Messages of at least 10 kB may be cached: the tab lists the hashes it holds in
   `cached_message_hashes`, and the server then sends only a `ref_hash` for them.

Not copied: file uploads, forms' deferred values, charts' selections, session
reconnection. Widgets the client cannot give a value for keep their value on the server
(which falls back to the previous run's value when a state is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.Slider_pb2 import Slider
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

STREAM_PATH = "/_stcore/stream"
HEALTH_PATH = "/_stcore/health"
XSRF_COOKIE = "_streamlit_xsrf"
SUBPROTOCOL = "streamlit"
DEFAULT_MAX_CACHED_AGE = 2  # the server's global.maxCachedMessageAge default

FINISHED_OK = ForwardMsg.FINISHED_SUCCESSFULLY
FINISHED_FRAGMENT_OK = ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY
FINISHED_EARLY = ForwardMsg.FINISHED_EARLY_FOR_RERUN

# Element kinds that are widgets with a value the tab keeps (buttons only fire triggers).
VALUE_WIDGETS = ("slider", "checkbox", "radio", "selectbox", "multiselect", "number_input",
                 "text_input", "text_area")


class ClientError(RuntimeError):
    """The server did not answer as expected (a timeout, a closed socket, an app error)."""


@dataclass
class Run:
    """One script run as the server announced it: `new_session` .. `script_finished`."""

    number: int  # this client's count of runs, from 1
    script_run_id: str
    fragment_ids: tuple[str, ...]
    page_script_hash: str
    started: float  # time.perf_counter() when its new_session arrived
    finished: float | None = None
    status: int | None = None  # ForwardMsg.ScriptFinishedStatus

    @property
    def full(self) -> bool:
        """A run of the whole page (not of one fragment)."""
        return not self.fragment_ids


@dataclass
class Element:
    """An element as last received at a delta path."""

    kind: str  # the Element oneof: "slider", "metric", "button", ...
    proto: Any  # that oneof's message (Slider, Metric, ...)
    path: tuple[int, ...]
    run: int  # Run.number of the run that sent it
    at: float  # time.perf_counter() when it arrived

    @property
    def label(self) -> str:
        return str(getattr(self.proto, "label", ""))

    @property
    def id(self) -> str:
        return str(getattr(self.proto, "id", ""))


@dataclass
class MetricSeen:
    """One st.metric delta: when it arrived, in which run, its label and value."""

    at: float
    run: int
    label: str
    body: str


def http_get(url: str, timeout: float) -> tuple[int, dict[str, list[str]], bytes]:
    """A plain GET: status, headers (name lower-cased -> values) and body."""
    request = urllib.request.Request(url, headers={"User-Agent": "pruneviz-bench"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        headers: dict[str, list[str]] = {}
        for name, value in response.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        return response.status, headers, response.read()


def xsrf_cookie(base_url: str, timeout: float = 30.0) -> str | None:
    """The `_streamlit_xsrf` cookie the server sets on GET / (None with XSRF off)."""
    _, headers, _ = http_get(base_url.rstrip("/") + "/", timeout)
    for line in headers.get("set-cookie", []):
        name, _, rest = line.partition("=")
        if name.strip() == XSRF_COOKIE:
            return rest.split(";", 1)[0].strip().strip('"')
    return None


def widget_state_of(element: Element, known: WidgetState | None) -> WidgetState | None:
    """The value a browser tab holds for a widget just drawn: the script's value when it
    set one (`set_value`), else what the tab already had, else the widget's default.
    None for widgets whose value this client does not model."""
    p, kind = element.proto, element.kind
    if kind not in VALUE_WIDGETS or not p.id:
        return None
    if known is not None and not p.set_value:
        return known
    state = WidgetState(id=p.id)
    if kind == "slider":
        if p.type == Slider.SELECT_SLIDER:
            values = list(p.raw_value) if p.set_value else [
                p.options[int(i)] for i in p.default if 0 <= int(i) < len(p.options)]
            state.string_array_value.data.extend(values)
        else:
            state.double_array_value.data.extend(list(p.value) if p.set_value else p.default)
    elif kind == "checkbox":
        state.bool_value = p.value if p.set_value else p.default
    elif kind in ("radio", "selectbox"):
        if p.set_value:
            state.string_value = p.raw_value
        elif 0 <= p.default < len(p.options):
            state.string_value = p.options[p.default]
        else:
            return None  # no selection: the tab sends nothing for it
    elif kind == "multiselect":
        values = list(p.raw_values) if p.set_value else [
            p.options[i] for i in p.default if 0 <= i < len(p.options)]
        state.string_array_value.data.extend(values)
    elif kind == "number_input":
        state.double_value = p.value if p.set_value else p.default
    else:  # text_input, text_area
        state.string_value = p.value if p.set_value else p.default
    return state


@dataclass
class Stats:
    """What one session sent and received."""

    messages: int = 0
    bytes_in: int = 0
    reruns_sent: int = 0
    auto_reruns_sent: int = 0
    cache_hits: int = 0
    app_errors: list[str] = field(default_factory=list)


class StreamlitSession:
    """One browser tab: one websocket, its runs, its elements and its widget values.

    Use `await open()`, then `wait_*` to wait for what the server sends, `set_widget` and
    `click` to act, and `await close()`. Every wait takes a timeout and raises
    ClientError with what it waited for."""

    def __init__(self, base_url: str, page: str = "", query: str = "", *,
                 name: str = "session", cache: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.page = page  # the page's URL path ("prune"); "" = the default page
        self.query = query  # the query string, without "?"
        self.name = name
        self.cache_enabled = cache
        self.page_script_hash = ""
        self.session_id = ""
        self.pages: dict[str, str] = {}  # url path -> page_script_hash
        self.runs: list[Run] = []
        self.elements: dict[tuple[int, ...], Element] = {}
        self.widget_states: dict[str, WidgetState] = {}
        self.metrics: list[MetricSeen] = []
        self.stats = Stats()
        self.closed: str | None = None  # why the socket closed, once it has
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._auto: dict[str, asyncio.Task[None]] = {}
        self._auto_interval: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._cache: dict[str, ForwardMsg] = {}
        self._cache_age: dict[str, int] = {}  # hash -> full runs finished when last seen
        self._full_runs_done = 0
        self._max_cached_age = DEFAULT_MAX_CACHED_AGE
        self._by_run_id: dict[str, Run] = {}

    # -- connection ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The address a browser would show for this tab."""
        path = f"{self.base_url}/{self.page}"
        return f"{path}?{self.query}" if self.query else path

    async def open(self, timeout: float = 60.0) -> None:
        """Fetch the XSRF cookie, open the websocket and ask for the page's first run."""
        try:
            cookie = await asyncio.wait_for(
                asyncio.to_thread(xsrf_cookie, self.base_url, timeout), timeout)
        except (OSError, TimeoutError) as exc:
            raise ClientError(f"{self.name}: GET {self.base_url}/ failed: {exc!r}") from exc
        parts = urllib.parse.urlsplit(self.base_url)
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        ws_url = f"{ws_scheme}://{parts.netloc}{parts.path}{STREAM_PATH}"
        protocols = [Subprotocol(SUBPROTOCOL)]
        headers = {}
        if cookie:
            protocols.append(Subprotocol(cookie))
            headers["Cookie"] = f"{XSRF_COOKIE}={cookie}"
        try:
            self._ws = await connect(
                ws_url, subprotocols=protocols, additional_headers=headers,
                origin=Origin(f"{parts.scheme}://{parts.netloc}"), open_timeout=timeout,
                max_size=None, ping_interval=None, close_timeout=5,
                user_agent_header="pruneviz-bench")
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            raise ClientError(f"{self.name}: websocket {ws_url} failed: {exc!r}") from exc
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-reader")
        await self.send_rerun()

    async def close(self) -> None:
        """Stop the timers and close the websocket (the server ends the session)."""
        for task in self._auto.values():
            task.cancel()
        self._auto.clear()
        self._auto_interval.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 10)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self.closed = self.closed or "closed by the client"
        self._notify()

    # -- sending ---------------------------------------------------------------------------

    def _client_state(self, msg: BackMsg, fragment_id: str, auto: bool,
                      extra: list[WidgetState]) -> None:
        state = msg.rerun_script
        state.query_string = self.query
        if self.page_script_hash:
            state.page_script_hash = self.page_script_hash
        else:
            state.page_name = self.page
        state.fragment_id = fragment_id
        state.is_auto_rerun = auto
        extra_ids = {w.id for w in extra}
        state.widget_states.widgets.extend(
            [w for wid, w in self.widget_states.items() if wid not in extra_ids] + extra)
        if self.cache_enabled:
            state.cached_message_hashes.extend(self._cache)
        info = state.context_info
        info.timezone = "UTC"
        info.timezone_offset = 0
        info.locale = "en-US"
        info.url = self.url
        info.is_embedded = False
        info.color_scheme = "light"

    async def send_rerun(self, *, fragment_id: str = "", auto: bool = False,
                         extra: list[WidgetState] | None = None) -> float:
        """Send a rerun_script with every widget value known (and `extra`, e.g. a button's
        trigger); returns time.perf_counter() just before sending."""
        if self._ws is None or self.closed:
            raise ClientError(f"{self.name}: cannot send, the websocket is "
                              f"{self.closed or 'not open'}")
        msg = BackMsg()
        self._client_state(msg, fragment_id, auto, extra or [])
        payload = msg.SerializeToString()
        sent = time.perf_counter()
        try:
            await self._ws.send(payload)
        except ConnectionClosed as exc:
            raise ClientError(f"{self.name}: websocket closed while sending: {exc!r}") from exc
        if auto:
            self.stats.auto_reruns_sent += 1
        else:
            self.stats.reruns_sent += 1
        return sent

    async def set_widget(self, element: Element, value: Any) -> float:
        """Set a widget's value as the user would (a slider: one number, or two for a
        range) and send the rerun; returns the send time."""
        state = WidgetState(id=element.id)
        if element.kind == "slider" and element.proto.type != Slider.SELECT_SLIDER:
            values = value if isinstance(value, list | tuple) else [value]
            state.double_array_value.data.extend(float(v) for v in values)
        elif element.kind == "checkbox":
            state.bool_value = bool(value)
        elif element.kind in ("radio", "selectbox", "text_input", "text_area"):
            state.string_value = str(value)
        elif element.kind == "number_input":
            state.double_value = float(value)
        else:
            raise ClientError(f"{self.name}: setting a {element.kind} is not supported")
        self.widget_states[element.id] = state
        return await self.send_rerun()

    async def click(self, element: Element) -> float:
        """Click a button: a trigger, sent once; returns the send time."""
        if element.kind != "button":
            raise ClientError(f"{self.name}: {element.kind} {element.label!r} is no button")
        return await self.send_rerun(extra=[WidgetState(id=element.id, trigger_value=True)])

    # -- receiving -------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                now = time.perf_counter()
                if isinstance(raw, str):
                    continue  # Streamlit sends binary protobufs only
                self.stats.messages += 1
                self.stats.bytes_in += len(raw)
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                self._handle(msg, now)
                self._notify()
        except ConnectionClosed as exc:
            self.closed = f"closed by the server ({exc!r})"
        except Exception as exc:  # noqa: BLE001 - reported to every waiter
            self.closed = f"reader failed: {exc!r}"
        else:
            self.closed = self.closed or "closed by the server"
        for task in self._auto.values():
            task.cancel()
        self._notify()

    def _current_run(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    def _handle(self, msg: ForwardMsg, now: float) -> None:
        kind = msg.WhichOneof("type")
        if kind == "ref_hash":
            cached = self._cache.get(msg.ref_hash)
            if cached is None:
                self.stats.app_errors.append(f"ref_hash {msg.ref_hash} not in the cache")
                return
            self.stats.cache_hits += 1
            self._cache_age[msg.ref_hash] = self._full_runs_done
            resolved = ForwardMsg()
            resolved.CopyFrom(cached)
            resolved.metadata.CopyFrom(msg.metadata)
            msg, kind = resolved, resolved.WhichOneof("type")
        elif self.cache_enabled and msg.metadata.cacheable and msg.hash:
            self._cache[msg.hash] = msg
            self._cache_age[msg.hash] = self._full_runs_done
        if kind == "new_session":
            self._on_new_session(msg, now)
        elif kind == "delta":
            self._on_delta(msg, now)
        elif kind == "script_finished":
            self._on_finished(msg, now)
        elif kind == "auto_rerun":
            # as the browser: one timer per fragment, kept if its interval is the same
            fid, interval = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
            if fid and not self.closed and self._auto_interval.get(fid) != interval:
                old = self._auto.pop(fid, None)
                if old is not None:
                    old.cancel()
                self._auto[fid] = asyncio.create_task(self._auto_rerun(fid, interval))
                self._auto_interval[fid] = interval
        elif kind == "stop_auto_rerun":
            for fid in msg.stop_auto_rerun.fragment_ids:
                task = self._auto.pop(fid, None)
                self._auto_interval.pop(fid, None)
                if task is not None:
                    task.cancel()
        elif kind == "navigation":
            # st.navigation names the page this run shows: later reruns ask for it
            self._pages_from(msg.navigation.app_pages)
            if msg.navigation.page_script_hash:
                self.page_script_hash = msg.navigation.page_script_hash
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string  # the browser updates its URL
        elif kind == "page_not_found":
            self.stats.app_errors.append(f"page not found: {msg.page_not_found.page_name!r}")
        elif kind == "session_event":
            event = msg.session_event
            if event.WhichOneof("type") == "script_compilation_exception":
                self.stats.app_errors.append(
                    f"script error: {event.script_compilation_exception.message}")

    def _pages_from(self, app_pages: Any) -> None:
        for page in app_pages:
            self.pages[page.url_pathname] = page.page_script_hash

    def _on_new_session(self, msg: ForwardMsg, now: float) -> None:
        new = msg.new_session
        if new.initialize.session_id:
            self.session_id = new.initialize.session_id
        if new.config.max_cached_message_age:
            self._max_cached_age = new.config.max_cached_message_age
        self._pages_from(new.app_pages)
        run = Run(number=len(self.runs) + 1, script_run_id=msg.metadata.run.script_run_id,
                  fragment_ids=tuple(msg.metadata.run.fragment_ids),
                  page_script_hash=new.page_script_hash, started=now)
        if run.full:
            for task in self._auto.values():  # as the browser: a full run clears the timers
                task.cancel()
            self._auto.clear()
            self._auto_interval.clear()
            if new.page_script_hash and not self.page_script_hash:
                # an app without st.navigation; with it, the navigation message names
                # the page (this hash is then the main script's)
                self.page_script_hash = new.page_script_hash
        self.runs.append(run)
        if run.script_run_id:
            self._by_run_id[run.script_run_id] = run

    def _on_delta(self, msg: ForwardMsg, now: float) -> None:
        if msg.delta.WhichOneof("type") != "new_element":
            return
        run = self._current_run()
        element_proto = msg.delta.new_element
        kind = element_proto.WhichOneof("type")
        if kind is None:
            return
        element = Element(kind=kind, proto=getattr(element_proto, kind),
                          path=tuple(msg.metadata.delta_path), run=run.number if run else 0,
                          at=now)
        self.elements[element.path] = element
        if kind == "metric":
            self.metrics.append(MetricSeen(now, element.run, element.label, element.proto.body))
        elif kind == "exception":
            self.stats.app_errors.append(
                f"exception: {element.proto.type}: {element.proto.message}")
        state = widget_state_of(element, self.widget_states.get(element.id))
        if state is not None:
            self.widget_states[element.id] = state

    def _on_finished(self, msg: ForwardMsg, now: float) -> None:
        run = self._by_run_id.get(msg.metadata.run.script_run_id) or self._current_run()
        if run is None:
            return
        run.finished, run.status = now, msg.script_finished
        if not (run.full and msg.script_finished == FINISHED_OK):
            return
        # As the browser after a completed full run: forget elements and widget values
        # the run did not draw, and age the message cache.
        self.elements = {p: e for p, e in self.elements.items() if e.run >= run.number}
        alive = {e.id for e in self.elements.values() if e.id}
        self.widget_states = {k: v for k, v in self.widget_states.items() if k in alive}
        self._full_runs_done += 1
        for digest, seen in list(self._cache_age.items()):
            if self._full_runs_done - seen > self._max_cached_age:
                self._cache.pop(digest, None)
                self._cache_age.pop(digest, None)

    async def _auto_rerun(self, fragment_id: str, interval: float) -> None:
        """A fragment's run_every timer, as the browser's setInterval."""
        with contextlib.suppress(ClientError):
            while not self.closed:
                await asyncio.sleep(max(interval, 0.05))
                await self.send_rerun(fragment_id=fragment_id, auto=True)

    # -- waiting ---------------------------------------------------------------------------

    async def wait_for(self, check: Any, timeout: float, what: str) -> Any:
        """Wait until `check()` returns something truthy (returned); ClientError after
        `timeout` seconds or when the socket closes, naming `what` was awaited."""
        deadline = time.perf_counter() + timeout
        while True:
            changed = self._changed
            found = check()
            if found:
                return found
            if self.closed:
                raise ClientError(f"{self.name}: websocket {self.closed} while waiting for "
                                  f"{what}")
            left = deadline - time.perf_counter()
            if left <= 0:
                raise ClientError(f"{self.name}: no {what} within {timeout:.0f} s"
                                  + self._app_error_hint())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    def _app_error_hint(self) -> str:
        errors = self.stats.app_errors[-2:]
        return f" (app said: {'; '.join(errors)})" if errors else ""

    def first_full_run_after(self, t: float) -> Run | None:
        """The first whole-page run that started after time `t`."""
        return next((r for r in self.runs if r.full and r.started > t), None)

    def page_done_after(self, t: float) -> Run | None:
        """The first whole-page run started after `t` that finished successfully (runs cut
        short by st.rerun are skipped: the page is done when the last one finishes)."""
        return next((r for r in self.runs if r.full and r.started > t
                     and r.status == FINISHED_OK), None)

    async def wait_page(self, after: float, timeout: float) -> Run:
        """Wait for a whole-page run started after `after` to finish successfully."""
        run: Run = await self.wait_for(lambda: self.page_done_after(after), timeout,
                                       "completed page run")
        return run

    def describe_since(self, t: float) -> str:
        """What the server sent since time `t`, for error messages."""
        runs = [r for r in self.runs if r.started > t]
        full = [r for r in runs if r.full]
        done = sum(r.status == FINISHED_OK for r in full)
        last = self.runs[-1].started if self.runs else None
        return (f"since then: {len(full)} whole-page runs started ({done} completed), "
                f"{len(runs) - len(full)} fragment runs; last run started "
                + (f"{time.perf_counter() - last:.1f} s ago" if last else "never"))

    def find(self, kind: str, *, label: str | None = None, id_part: str | None = None,
             run: int | None = None) -> list[Element]:
        """Elements on the page now, in delta-path order, by kind, exact label, part of
        their widget id (which ends with the widget's key), and the run that drew them."""
        found = [e for e in self.elements.values() if e.kind == kind
                 and (label is None or e.label == label)
                 and (id_part is None or id_part in e.id)
                 and (run is None or e.run == run)]
        return sorted(found, key=lambda e: e.path)

    def summary(self) -> list[dict[str, str]]:
        """The page's elements now: kind, label (or the start of its text), widget id."""
        rows = []
        for e in sorted(self.elements.values(), key=lambda e: e.path):
            text = e.label or str(getattr(e.proto, "body", ""))[:60]
            rows.append({"kind": e.kind, "label": text, "id": e.id})
        return rows


async def wait_healthy(base_url: str, timeout: float, alive: Any = None) -> None:
    """Poll /_stcore/health until it answers 200; ClientError after `timeout` seconds or
    as soon as `alive()` returns False (the server process died)."""
    deadline = time.perf_counter() + timeout
    last = "no answer"
    while time.perf_counter() < deadline:
        if alive is not None and not alive():
            raise ClientError(f"the server exited before it was healthy ({last})")
        try:
            status, _, body = await asyncio.to_thread(
                http_get, base_url.rstrip("/") + HEALTH_PATH, 5.0)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:100]!r}"
        except OSError as exc:
            last = repr(exc)
        await asyncio.sleep(0.3)
    raise ClientError(f"{base_url}{HEALTH_PATH} not healthy within {timeout:.0f} s ({last})")
