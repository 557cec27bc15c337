"""The playground page in headless Chromium (Playwright driving Debian's ``chromium``): it loads
the deltas with their fitted curves, moving a slider moves the curves' marker, and submitting
streams two different answers, unsteered and steered, with no console error."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from unisteer.serve.server import Server

from serve_helpers import served, server, start  # noqa: F401 (fixtures used by name)

pytestmark = pytest.mark.slow  # a real browser


@pytest.fixture(scope="module")
def browser() -> Any:
    from playwright.sync_api import sync_playwright

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium (see README)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_slider_and_submit_give_two_different_answers(server: Server, browser: Any) -> None:
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
    assert "tiny" in page.inner_text("#model")
    slider = "#m-vector-diffmean"
    assert page.locator("input[type=range]").count() == 2
    marker = f"{slider} ~ .plot line.marker"
    move = "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }"
    xs = []
    for end in ("min", "max"):
        page.eval_on_selector(slider, move, page.get_attribute(slider, end))
        xs.append(float(page.get_attribute(marker, "x1")))
    assert xs[0] < xs[1]  # the marker follows m along the curves
    page.eval_on_selector(
        "#m-lora-sft", "(el) => { el.value = 0; el.dispatchEvent(new Event('input')); }"
    )
    assert "no fitted curves" in page.inner_text("#m-lora-sft ~ .plot")
    page.fill("#prompt", "good system sea")
    page.fill("#max-tokens", "8")
    page.click("#go")
    page.wait_for_selector("body[data-state=done]", timeout=60_000)
    base, steered = page.inner_text("#base"), page.inner_text("#steered")
    assert base.strip() and steered.strip() and base != steered, (base, steered)
    assert "vector-diffmean m=" in page.inner_text("#steered-title")
    assert problems == []
    page.close()


def test_the_page_asks_for_a_key_when_the_server_wants_one(
    served: dict[str, Any], browser: Any
) -> None:
    s = start(served, api_key="k3y")
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(s.url + "/")
        page.wait_for_selector("#status.error", timeout=30_000)
        assert "API key" in page.inner_text("#status")
        page.fill("#key", "k3y")
        page.dispatch_event("#key", "change")
        page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
        assert errors == []
        page.close()
    finally:
        s.close()
