"""The review page in a real headless browser (Debian's chromium driven by playwright)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright
from review_support import XSS_IMG, XSS_SCRIPT

from cenlib.review import ReviewServer, decision_history, read_decisions

pytestmark = pytest.mark.e2e
SHOT = Path("/tmp/review.png")  # the latest screenshot, for a human to look at


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("no chromium on PATH; run `make chromium` (installs Debian's chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def dialogs() -> list[str]:
    """Messages of every dialog (alert, confirm...) the page opened: a script that ran."""
    return []


@pytest.fixture
def page(browser: Browser, dialogs: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()

    def seen(d: Dialog) -> None:
        dialogs.append(d.message)
        d.dismiss()

    pg.on("dialog", seen)
    yield pg
    context.close()


def at(page: Page, index: int) -> None:
    """Wait until the page shows the patch at ``index`` of the list, loaded."""
    expect(page.locator("#position")).to_have_text(f"{index + 1} of 5")
    expect(page.locator("#main")).not_to_have_class(re.compile(r"\bloading\b"))
    expect(page.locator("#caption span").first).to_be_visible()


def test_review_three_patches_by_keyboard_and_find_them_after_a_reload(
    page: Page, dialogs: list[str], run_dir: Path, tmp_path: Path
) -> None:
    with ReviewServer(run_dir, reviewer="keyboard") as server:
        page.goto(server.url)
        at(page, 0)
        assert "token" not in page.url  # the token left the address bar for a cookie
        expect(page.locator("#progress")).to_have_text("0 / 5 reviewed")
        page.keyboard.press("a")  # accept the first; the page moves on
        at(page, 1)
        page.keyboard.press("r")
        at(page, 2)
        page.keyboard.press("e")
        editor = page.locator("#editor")
        expect(editor).to_be_focused()
        editor.fill("Grass covers the image; no water.")
        page.keyboard.press("Escape")  # cancel: nothing saved
        expect(editor).to_be_hidden()
        assert len(decision_history(run_dir)) == 2
        page.keyboard.press("e")
        editor.fill("Grass covers the image; no water.")
        page.keyboard.press("Control+Enter")
        at(page, 3)
        expect(page.locator("#progress")).to_have_text("3 / 5 reviewed")
        page.keyboard.press("k")
        at(page, 2)
        expect(page.locator("#edited")).to_have_text("Grass covers the image; no water.")
        expect(page.locator("#edited .mention.negated")).to_have_text("water")
        page.screenshot(path=tmp_path / "review.png", full_page=True)
        page.screenshot(path=SHOT, full_page=True)
        page.reload()
        at(page, 2)  # the position is kept in the address
        expect(page.locator("#progress")).to_have_text("3 / 5 reviewed")
        marks = page.locator("#list .item").evaluate_all("els => els.map(e => e.dataset.decision)")
        assert marks == ["accept", "reject", "edit", "", ""]
        expect(page.locator("#decision")).to_contain_text("edited by keyboard")
        page.keyboard.press("ArrowLeft")
        at(page, 1)
        expect(page.locator("#decision")).to_contain_text("rejected by keyboard")
        page.select_option("#f-decision", "none")  # filters: only the undecided
        expect(page.locator("#list .item")).to_have_count(2)
        page.select_option("#f-decision", "")
        page.select_option("#f-status", "failed")
        page.select_option("#f-type", "hallucinated")
        expect(page.locator("#list .item")).to_have_count(1)
    latest = read_decisions(run_dir)
    assert [d.decision for d in latest.values()] == ["accept", "reject", "edit"]
    assert list(latest.values())[2].text == "Grass covers the image; no water."
    assert {d.reviewer for d in latest.values()} == {"keyboard"}
    assert dialogs == []


def test_captions_are_text_never_markup(page: Page, dialogs: list[str], run_dir: Path) -> None:
    with ReviewServer(run_dir) as server:
        page.goto(server.url)
        at(page, 0)
        page.keyboard.press("j")
        page.keyboard.press("j")
        at(page, 2)
        caption = page.locator("#caption")
        expect(caption).to_contain_text(XSS_SCRIPT)
        expect(caption).to_contain_text(XSS_IMG)
        assert caption.locator("script, img").count() == 0
        # An edit holding markup is stored and shown as text too.
        page.keyboard.press("e")
        page.locator("#editor").fill(f"{XSS_IMG} grass {XSS_SCRIPT}")
        page.keyboard.press("Control+Enter")
        at(page, 3)
        page.keyboard.press("k")
        at(page, 2)
        expect(page.locator("#edited")).to_have_text(f"{XSS_IMG} grass {XSS_SCRIPT}")
        assert page.locator("#edited script, #edited img, #history img").count() == 0
        page.locator(".history summary").click()
        expect(page.locator("#history")).to_contain_text(XSS_IMG)
        page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == []


def test_without_the_token_the_page_is_refused(page: Page, run_dir: Path) -> None:
    with ReviewServer(run_dir) as server:
        response = page.goto(server.base + "/")
        assert response is not None and response.status == 403
        expect(page.locator("body")).to_contain_text("access token")
        # Even holding the cookie, a form posted from a foreign page cannot decide.
        page.goto(server.url)
        at(page, 0)
        pid = page.locator("#patch-id").inner_text()
        page.goto("about:blank")
        page.set_content(
            f'<form method="post" action="{server.base}/api/decision" enctype="text/plain">'
            f'<input name=\'{{"patch_id":"{pid}","key":"key-00","decision":"accept","x":"\' '
            "value='\"}'></form>"
        )
        with page.expect_response(f"{server.base}/api/decision") as posted:
            page.locator("form").evaluate("f => f.submit()")
        assert posted.value.status == 403
    assert decision_history(run_dir) == []
