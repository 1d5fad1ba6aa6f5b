"""One real-browser test: the server on a free localhost port, Debian's headless Chromium
driven by playwright; a slider moves and the measured metric changes."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.browser import ARTIFACTS, CHROMIUM, LAUNCH_FLAGS, ROOT
from tests.fixtures.browser import serve as _serve
from tests.fixtures.browser import server as _server

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Chromium is not installed at {CHROMIUM} "
                       "(Debian package 'chromium'; .ci/run installs it)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with _serve() as url:
        yield url


def _file_input(page: Any, label: str) -> Any:
    """The file input of the uploader labelled `label` (the Model page has several)."""
    return page.get_by_test_id("stFileUploader").filter(has_text=label).locator(
        "input[type=file]")


def _metric(page: Any, label: str) -> str:
    metric = page.get_by_test_id("stMetric").filter(has_text=label).first
    return str(metric.get_by_test_id("stMetricValue").inner_text())


def test_a_deep_link_opens_its_page_on_its_model(server: str) -> None:
    """The server's first request is a page URL naming a model: that page opens inside the
    app's navigation (sidebar picker, other pages listed) on that model, and the sidebar
    link to another page works. (With a folder named `pages/` Streamlit ran such a first
    request in its legacy mode, without app.py; `app_pages/` and st.navigation do not.)"""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server}/prune?model=sample:digits_resnet", wait_until="networkidle")
            page.get_by_text("All layers", exact=True).wait_for(timeout=60_000)
            sidebar = page.get_by_test_id("stSidebar")
            picked = sidebar.get_by_role("combobox", name="Model").input_value()
            slider = page.get_by_role("slider", name="layer1.conv1 sparsity %")
            slider.wait_for(timeout=60_000)  # the layer rows render after the first widgets
            resnet_slider = slider.count()
            links = sidebar.get_by_test_id("stSidebarNavLink").all_inner_texts()
            sidebar.get_by_test_id("stSidebarNavLink").filter(has_text="Trade-offs").click()
            page.get_by_role("heading", name="Trade-offs").wait_for(timeout=60_000)
            switched_url = page.url
        finally:
            browser.close()
    assert "Digits ResNet" in picked
    assert resnet_slider == 1
    assert {"Model", "Prune", "Trade-offs", "Export"} <= {link.split()[-1] for link in links}
    assert switched_url.split("?")[0].endswith("/tradeoffs")


def test_slider_move_updates_the_measured_metric(server: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{server}/prune", wait_until="networkidle")
            page.get_by_text("All layers", exact=True).wait_for(timeout=60_000)
            before = _metric(page, "accuracy")
            slider = page.get_by_role("slider", name="conv2 sparsity %")
            slider.focus()
            start = time.monotonic()
            for _ in range(90):
                page.keyboard.press("ArrowRight")
            page.wait_for_function(
                """(before) => {
                    const el = [...document.querySelectorAll('[data-testid="stMetric"]')]
                      .find(m => m.innerText.startsWith('accuracy'));
                    return el && !el.innerText.includes(before);
                }""",
                arg=before, timeout=30_000,
            )
            elapsed = time.monotonic() - start
            after = _metric(page, "accuracy")
            page.screenshot(path=str(ARTIFACTS / "prune.png"), full_page=True)
            # a small screen: the layer view goes below the rows, and the metrics stay in
            # view above the last slider while it moves
            page.set_viewport_size({"width": 1024, "height": 768})
            last = page.get_by_role("slider", name="fc sparsity %")
            last.scroll_into_view_if_needed()
            last.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(2_000)
            metric = page.locator('[data-testid="stMetric"]').first.bounding_box()
            rows_end = last.bounding_box()
            view = page.get_by_text("Layer to look at", exact=True).bounding_box()
            page.screenshot(path=str(ARTIFACTS / "prune_1024.png"))
        finally:
            browser.close()
    assert after != before
    assert elapsed < 30
    assert metric is not None
    assert rows_end is not None
    assert view is not None
    assert 0 <= metric["y"] < rows_end["y"] < 768  # the metrics above the slider, in view
    assert view["y"] > rows_end["y"]  # the layer view below the rows, not beside them


def test_users_model_starts_and_bad_uploads_are_refused(tmp_path: Path) -> None:
    """`streamlit run app.py -- --model file.py:build --data ...`: the user's transformer
    opens; uploading a malicious pickle shows why it was refused and runs nothing; an
    empty, a truncated, a whole-model, a missing-key and a wrong-shape file are each
    explained; good weights are then taken, and the app goes on working. Fine-tune, with
    no training data given, says so and links to the Model page's upload."""
    playwright = pytest.importorskip("playwright.sync_api")
    import io
    import pickle

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.user_models.embed_transformer import sample_data

    ids, labels = sample_data(200)
    np.savez(tmp_path / "tokens.npz", x=ids.numpy(), y=labels.numpy())
    sentinel = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, (f"touch {sentinel}",))

    buffer = io.BytesIO()
    torch.save({"weight": Hostile()}, buffer, pickle_module=pickle)
    evil = tmp_path / "weights.pt"
    evil.write_bytes(buffer.getvalue())
    model = f"{ROOT / 'tests/fixtures/user_models/embed_transformer.py'}:build"
    from fixtures.user_models.embed_transformer import build
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in build().state_dict().items()}
    good = tmp_path / "tuned.safetensors"
    good.write_bytes(save({k: v * 0.5 for k, v in state.items()}))
    whole = io.BytesIO()
    torch.save(build(), whole)
    missing = {k: v for k, v in state.items() if k != "positions"}
    shapes = {**state, "head.weight": torch.zeros(3, 3)}
    contents = {
        "empty.safetensors": (b"", "is empty (0 bytes)"),
        "truncated.safetensors": (good.read_bytes()[:2000], "damaged or truncated"),
        "whole.pt": (whole.getvalue(), "holds a whole pickled model object"),
        "missing.safetensors": (save(missing), "missing from the file: positions"),
        "shapes.safetensors": (save(shapes), "head.weight (file (3, 3), model (5, 24))"),
    }
    bad_files = []
    for name, (data, expected) in contents.items():
        (tmp_path / name).write_bytes(data)
        bad_files.append((tmp_path / name, expected))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _serve("--model", model, "--data", str(tmp_path / "tokens.npz")) as url, \
            playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url, wait_until="networkidle")
            page.get_by_text("embed_transformer.py:build", exact=False).first.wait_for(
                timeout=60_000)
            page.get_by_text("Other weights, live evaluation subset").click()
            _file_input(page, "Weights file").set_input_files(str(evil))
            page.wait_for_timeout(2000)
            page.get_by_role("button", name="Use these weights").click()
            page.get_by_text("nothing in it was run").wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "hostile-upload.png"), full_page=True)
            # Every other kind of bad file is explained too, and the tab stays usable.
            for path, expected in bad_files:
                _file_input(page, "Weights file").set_input_files(str(path))
                page.wait_for_timeout(2000)  # the upload finishes before the button is used
                page.get_by_role("button", name="Use these weights").click()
                page.get_by_text(expected).wait_for(timeout=30_000)
            _file_input(page, "Weights file").set_input_files(str(good))
            page.wait_for_timeout(2000)
            page.get_by_role("button", name="Use these weights").click()
            page.get_by_text("This tab prunes the weights you uploaded").wait_for(
                timeout=30_000)
            page.goto(f"{url}/prune", wait_until="networkidle")
            page.get_by_text("All layers", exact=True).wait_for(timeout=60_000)
            # Started without --train-data: Fine-tune says so and links to the upload.
            page.get_by_test_id("stSidebarNavLink").filter(has_text="Fine-tune").click()
            page.get_by_text("This model has no training data").wait_for(timeout=60_000)
            page.get_by_text("Upload training data on the Model page").click()
            page.get_by_text("Training data file").wait_for(timeout=60_000)
        finally:
            browser.close()
    assert not sentinel.exists()


def _go(page: Any, link: str, heading: str) -> None:
    page.get_by_test_id("stSidebar").get_by_test_id("stSidebarNavLink").filter(
        has_text=re.compile(rf"{re.escape(link)}\s*$")).click()
    page.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)


def _pick_model(page: Any, title: str) -> None:
    picker = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")
    picker.click()
    page.keyboard.type(title)
    page.keyboard.press("Enter")
    page.wait_for_function(
        """(title) => [...document.querySelectorAll('[data-testid="stSidebar"] input')]
            .some(i => i.value.includes(title))""", arg=title, timeout=60_000)
    page.wait_for_timeout(1_500)


def _experiments_csv(page: Any) -> str:
    """The Trade-offs page's experiments, as its CSV download."""
    _go(page, "Trade-offs", "Trade-offs")
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download experiments (CSV)").click()
    return Path(download.value.path()).read_text()


def _page_text(page: Any, link: str, heading: str, wait_for: str) -> str:
    _go(page, link, heading)
    page.get_by_text(wait_for).first.wait_for(state="attached", timeout=60_000)
    page.wait_for_timeout(1_000)
    return str(page.get_by_test_id("stMain").inner_text())


def test_a_killed_server_loses_no_work(tmp_path: Path) -> None:
    """Prune, run a sensitivity analysis and a fine-tune, switch the model and back,
    upload identical weights, switch the scope; kill the server with SIGKILL, start it
    again and reopen the work: every configuration, result and plan is there, identical."""
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "saved"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            with _server("--workspace", str(folder)) as (url, proc):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/prune?model=sample:digits_mlp", wait_until="networkidle")
                page.get_by_text("All layers", exact=True).wait_for(timeout=60_000)
                slider = page.get_by_role("slider", name="fc1 sparsity %")
                slider.focus()
                for _ in range(40):
                    page.keyboard.press("ArrowRight")
                page.wait_for_timeout(3_000)
                _go(page, "Sensitivity", "Sensitivity")
                page.get_by_role("button", name="Run", exact=True).click()
                page.get_by_text("took", exact=False).first.wait_for(timeout=180_000)
                _go(page, "Fine-tune", "Fine-tune")
                steps = page.get_by_role("spinbutton", name="Max steps")
                steps.fill("20")
                steps.press("Enter")
                page.wait_for_timeout(1_000)
                page.get_by_role("button", name="Train", exact=True).click()
                page.get_by_text("after fine-tuning (fine-tuned #1)").first.wait_for(
                    state="attached", timeout=180_000)  # a table cell
                _pick_model(page, "Digits CNN")
                _pick_model(page, "Digits MLP")
                _go(page, "Model", "pruneviz")
                page.get_by_text("Other weights, live evaluation subset").click()
                uploader = page.get_by_test_id("stFileUploader").filter(
                    has_text="Weights file")
                uploader.locator("input[type=file]").set_input_files(
                    str(ROOT / "sample_models" / "digits_mlp.safetensors"))
                use = page.get_by_role("button", name="Use these weights")
                page.wait_for_function("""() => [...document.querySelectorAll('button')]
                    .some(b => b.innerText.includes('Use these weights') && !b.disabled)""",
                                       timeout=30_000)
                use.click()
                page.get_by_text("nothing changed").first.wait_for(timeout=60_000)
                _go(page, "Prune", "Prune")
                page.get_by_text("Global ranking", exact=True).click()
                page.wait_for_timeout(4_000)  # measured, and its slow figures refined
                before = _experiments_csv(page)
                sensitivity = _page_text(page, "Sensitivity", "Sensitivity", "took")
                finetuned = _page_text(page, "Fine-tune", "Fine-tune",
                                       "after fine-tuning (fine-tuned #1)")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            with _server("--workspace", str(folder)) as (url, _):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url, wait_until="networkidle")
                reopen = page.get_by_test_id("stSidebar").get_by_role(
                    "button", name="Reopen")
                reopen.wait_for(timeout=60_000)
                reopen.click()
                # reopened: the sidebar says where the work is saved (the click is lost if
                # the next navigation interrupts the run that reopens)
                page.get_by_test_id("stSidebar").get_by_text("Saved as you go").wait_for(
                    timeout=60_000)
                after = _experiments_csv(page)
                page.screenshot(path=str(ARTIFACTS / "reopened_tradeoffs.png"), full_page=True)
                sensitivity_again = _page_text(page, "Sensitivity", "Sensitivity", "took")
                finetuned_again = _page_text(page, "Fine-tune", "Fine-tune",
                                             "after fine-tuning (fine-tuned #1)")
                _go(page, "Prune", "Prune")
                page.get_by_text("All layers", exact=True).wait_for(timeout=60_000)
                scope = page.get_by_role("radio", name="Global ranking").is_checked()
        finally:
            browser.close()
    assert len(before.splitlines()) >= 5  # baseline, moves, the fine-tuned pair, global
    assert after == before  # every configuration and every number
    assert sensitivity_again == sensitivity
    # the run and its result (the recipe's controls above them start at their defaults)
    run = re.compile(r"step \d+ of \d+ — .*", re.DOTALL)
    shown = run.search(finetuned)
    assert shown is not None
    assert "ran to --max-steps 20" in shown.group()
    again = run.search(finetuned_again)
    assert again is not None
    assert again.group() == shown.group()
    assert scope  # the plan on screen: the global one

def test_data_uploaded_in_the_browser_is_previewed_and_used(server: str, tmp_path: Path) -> None:
    """The Model page's data uploader, driven in Chromium: a hostile zip (a member climbing
    out of its folder) is refused with the reason; an .npz of 150 digits becomes the
    tab's evaluation data (baseline re-measured on it, previewed with sample images); the
    model's own data comes back with one click."""
    playwright = pytest.importorskip("playwright.sync_api")
    import io
    import zipfile

    import numpy as np

    from pruneviz.data.tensors import load_digits

    test = load_digits("test")
    good = tmp_path / "mine.npz"
    np.savez(good, x=test.x[:150].numpy(), y=test.y[:150].numpy())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("digits/0/a.png", b"")
        archive.writestr("../../escaped.png", b"x")
    evil = tmp_path / "evil.zip"
    evil.write_bytes(buffer.getvalue())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(server, wait_until="networkidle")
            page.get_by_text("Your own evaluation and training data").click()
            uploader = _file_input(page, "Evaluation data file")
            uploader.wait_for(state="attached", timeout=60_000)
            uploader.set_input_files(str(evil))
            page.wait_for_timeout(2000)  # the upload finishes before the button is used
            page.get_by_role("button", name="Use this evaluation data").click()
            page.get_by_text("a path outside the zip's own folder").wait_for(timeout=30_000)
            uploader.set_input_files(str(good))
            page.wait_for_timeout(2000)
            page.get_by_role("button", name="Use this evaluation data").click()
            page.get_by_text("as its evaluation data (150 samples)").wait_for(timeout=60_000)
            images = page.get_by_test_id("stImage").locator("img").count()
            page.screenshot(path=str(ARTIFACTS / "data-upload.png"), full_page=True)
            page.get_by_role("button", name="Use the model's own data").first.click()
            page.get_by_text("uses the model's own evaluation data again").wait_for(
                timeout=60_000)
        finally:
            browser.close()
    assert images >= 16  # 8 samples of each split
    assert not (tmp_path.parent / "escaped.png").exists()
