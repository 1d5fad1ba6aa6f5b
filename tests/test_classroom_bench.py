"""benchmarks/classroom.py and its websocket client, benchmarks/streamlit_client.py.

The client's bookkeeping is tested on hand-made ForwardMsgs (no server): runs, elements,
widget values, the message cache and what a rerun request carries. One slow test runs
the benchmark end to end on a real server.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.Slider_pb2 import Slider
from streamlit.proto.WidgetStates_pb2 import WidgetState

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks are scripts, not a package
client = importlib.import_module("streamlit_client")
classroom = importlib.import_module("classroom")

SLIDER_ID = "$$ID-abc-pv_w_sp::conv1"


def new_session(run_id: str, fragment: str = "") -> ForwardMsg:
    msg = ForwardMsg()
    msg.new_session.page_script_hash = "main-hash"
    msg.metadata.run.script_run_id = run_id
    if fragment:
        msg.metadata.run.fragment_ids.append(fragment)
    return msg


def navigation(page_hash: str) -> ForwardMsg:
    msg = ForwardMsg()
    msg.navigation.page_script_hash = page_hash
    page = msg.navigation.app_pages.add()
    page.page_script_hash, page.url_pathname = page_hash, "prune"
    return msg


def slider(path: tuple[int, ...], *, default: float = 0.0,
           value: float | None = None) -> ForwardMsg:
    msg = ForwardMsg()
    proto = msg.delta.new_element.slider
    proto.id, proto.label, proto.type = SLIDER_ID, "conv1 sparsity %", Slider.SLIDER
    proto.min, proto.max, proto.step = 0, 100, 1
    proto.default.append(default)
    if value is not None:
        proto.value.append(value)
        proto.set_value = True
    msg.metadata.delta_path.extend(path)
    return msg


def metric(path: tuple[int, ...], body: str, label: str = "accuracy") -> ForwardMsg:
    msg = ForwardMsg()
    msg.delta.new_element.metric.label = label
    msg.delta.new_element.metric.body = body
    msg.metadata.delta_path.extend(path)
    return msg


def finished(run_id: str, status: int = ForwardMsg.FINISHED_SUCCESSFULLY) -> ForwardMsg:
    msg = ForwardMsg()
    msg.script_finished = status  # type: ignore[assignment]
    msg.metadata.run.script_run_id = run_id
    return msg


def feed(session: object, messages: list[ForwardMsg], start: float) -> None:
    for i, msg in enumerate(messages):
        session._handle(msg, start + i * 0.01)  # type: ignore[attr-defined]


def test_a_run_draws_the_page_and_a_later_run_replaces_it() -> None:
    s = client.StreamlitSession("http://127.0.0.1:1", page="prune")
    feed(s, [new_session("r1"), navigation("prune-hash"), metric((0, 0), "99.1%"),
             slider((0, 1)), finished("r1")], start=1.0)
    assert s.page_script_hash == "prune-hash"  # navigation names the page, not new_session
    assert s.pages == {"prune": "prune-hash"}
    assert [r.status for r in s.runs] == [ForwardMsg.FINISHED_SUCCESSFULLY]
    assert s.page_done_after(0.5) is s.runs[0]
    assert s.find("slider")[0].id == SLIDER_ID
    assert list(s.widget_states[SLIDER_ID].double_array_value.data) == [0.0]
    # a second run that draws only the metric: the slider and its value are forgotten
    feed(s, [new_session("r2"), metric((0, 0), "93.5%"), finished("r2")], start=2.0)
    assert s.find("slider") == []
    assert SLIDER_ID not in s.widget_states
    assert [(m.run, m.body) for m in s.metrics] == [(1, "99.1%"), (2, "93.5%")]
    assert s.first_full_run_after(1.5) is s.runs[1]


def test_a_fragment_run_and_a_cut_run_do_not_complete_the_page() -> None:
    s = client.StreamlitSession("http://127.0.0.1:1", page="prune")
    feed(s, [new_session("r1", fragment="f1"),
             finished("r1", ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY),
             new_session("r2"), finished("r2", ForwardMsg.FINISHED_EARLY_FOR_RERUN)], 1.0)
    assert s.page_done_after(0.0) is None
    assert s.first_full_run_after(0.0) is s.runs[1]
    feed(s, [new_session("r3"), finished("r3")], 2.0)
    assert s.page_done_after(0.0) is s.runs[2]


def test_widget_values_follow_the_script_and_the_user() -> None:
    s = client.StreamlitSession("http://127.0.0.1:1", page="prune")
    feed(s, [new_session("r1"), slider((0, 1), default=5.0)], 1.0)
    assert list(s.widget_states[SLIDER_ID].double_array_value.data) == [5.0]
    s.widget_states[SLIDER_ID] = WidgetState(id=SLIDER_ID)
    s.widget_states[SLIDER_ID].double_array_value.data.append(30.0)
    feed(s, [slider((0, 1), default=5.0)], 2.0)  # redrawn: the tab keeps its value
    assert list(s.widget_states[SLIDER_ID].double_array_value.data) == [30.0]
    feed(s, [slider((0, 1), default=5.0, value=60.0)], 3.0)  # the script set it
    assert list(s.widget_states[SLIDER_ID].double_array_value.data) == [60.0]


def test_selectbox_state_is_the_chosen_option_text() -> None:
    element = client.Element(kind="selectbox", proto=None, path=(0,), run=1, at=0.0)
    msg = ForwardMsg()
    box = msg.delta.new_element.selectbox
    box.id, box.default = "$$ID-x-gran", 1
    box.options.extend(["structured", "unstructured"])
    element.proto = box
    assert client.widget_state_of(element, None).string_value == "unstructured"
    box.set_value, box.raw_value = True, "structured"
    assert client.widget_state_of(element, None).string_value == "structured"


def test_a_rerun_request_carries_every_value_and_a_click_once() -> None:
    s = client.StreamlitSession("http://127.0.0.1:1", page="prune", query="token=abc")
    msg = BackMsg()
    s._client_state(msg, "", False, [])
    assert msg.rerun_script.page_name == "prune"  # the first request names the URL path
    assert msg.rerun_script.page_script_hash == ""
    feed(s, [new_session("r1"), navigation("prune-hash"), slider((0, 1), default=7.0)], 1.0)
    msg = BackMsg()
    s._client_state(msg, "frag", True, [WidgetState(id="$$ID-b-run", trigger_value=True)])
    state = msg.rerun_script
    assert (state.page_script_hash, state.page_name) == ("prune-hash", "")
    assert state.query_string == "token=abc"
    assert (state.fragment_id, state.is_auto_rerun) == ("frag", True)
    by_id = {w.id: w for w in state.widget_states.widgets}
    assert list(by_id[SLIDER_ID].double_array_value.data) == [7.0]
    assert by_id["$$ID-b-run"].trigger_value
    assert "$$ID-b-run" not in s.widget_states  # a trigger is not kept


def test_a_cached_message_is_resolved_from_its_reference() -> None:
    s = client.StreamlitSession("http://127.0.0.1:1", page="prune")
    big = metric((0, 2), "84.0 KiB", label="dense file")
    big.hash, big.metadata.cacheable = "h1", True
    ref = ForwardMsg()
    ref.ref_hash = "h1"
    ref.metadata.delta_path.extend([0, 2])
    feed(s, [new_session("r1"), big, finished("r1"), new_session("r2"), ref], 1.0)
    msg = BackMsg()
    s._client_state(msg, "", False, [])
    assert list(msg.rerun_script.cached_message_hashes) == ["h1"]
    assert s.stats.cache_hits == 1
    assert [m.run for m in s.metrics] == [1, 2]
    assert not s.stats.app_errors


def test_metric_after_takes_the_first_page_run_after_the_move() -> None:
    s = client.StreamlitSession("http://127.0.0.1:1", page="prune")
    feed(s, [new_session("r1"), metric((0, 0), "99%")], 1.0)  # a run going on at the move
    since, t0 = len(s.metrics), 1.5
    feed(s, [metric((0, 0), "99%")], 1.6)  # still the old run's
    assert classroom.metric_after(s, since, t0, "accuracy") is None
    feed(s, [new_session("r2"), metric((0, 1), "1,000", label="params"),
             metric((0, 0), "93%")], 2.0)
    seen = classroom.metric_after(s, since, t0, "accuracy")
    assert (seen.run, seen.body) == (2, "93%")


def test_slider_values_are_on_the_step_and_differ() -> None:
    msg = slider((0,))
    element = client.Element("slider", msg.delta.new_element.slider, (0,), 1, 0.0)
    assert classroom.slider_values(element) == (30.0, 60.0)


def test_descendants_follow_parent_links() -> None:
    table = {10: (1, 1.0), 11: (10, 2.0), 12: (11, 3.0), 20: (1, 4.0)}
    assert sorted(classroom.descendants(10, table)) == [11, 12]


def test_the_alone_configuration_is_always_run() -> None:
    args = classroom.parse_args(["--sessions", "4,8"])
    assert args.counts == [1, 4, 8]
    with pytest.raises(SystemExit):
        classroom.parse_args(["--sessions", "four"])


@pytest.mark.slow
def test_the_benchmark_runs_on_a_real_server() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "classroom.py"), "--sessions", "2", "--finetune",
         "0", "--moves", "2", "--rounds", "1", "--timeout", "120", "--move-timeout", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    for name, count in (("1", 1), ("2", 2)):
        config = result["configs"][name]
        assert config["errors"] == 0, config["error_samples"]
        assert config["moves"] == 2 * count
        assert config["first_metric_ms"]["median"] > 0
        assert config["metric_changed_moves"] == 2 * count
    assert result["target"]["meets"] is None  # no fine-tuning configuration was run


def test_p90_is_a_nearest_rank_never_below_the_median() -> None:
    assert classroom.p90([1.0, 2.0]) == 2.0
    assert classroom.p90([float(v) for v in range(1, 11)]) == 9.0
    assert classroom.spread([]) is None
