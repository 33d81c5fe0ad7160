"""The chat example in a real headless Chromium: two tabs chat through the page's own
JavaScript, exactly as a person would use it.

The FastAPI docs' page connects to ``ws://localhost:8000``, so the example is served on
port 8000. Needs Debian's ``chromium`` and Playwright for Python (no browser download:
Playwright drives ``/usr/bin/chromium``)."""

from __future__ import annotations

import os
import shutil

import pytest
from core_server import REPO_DIR, ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
if shutil.which("chromium") is None:
    if os.environ.get("FERROSOCK_REQUIRE_SERVICES"):
        raise RuntimeError("chromium is not installed and FERROSOCK_REQUIRE_SERVICES is set")
    pytest.skip("Debian's chromium package is not installed", allow_module_level=True)
TIMEOUT_MS = 10_000


@pytest.fixture
def chat_server():
    server = ServerProcess("examples.chat:app", "--port", "8000", cwd=REPO_DIR).start()
    try:
        yield server
    finally:
        server.stop()


def send(page, text: str) -> None:
    page.fill("#messageText", text)
    page.click("button")


def wait_for_message(page, text: str) -> None:
    page.locator("#messages li", has_text=text).first.wait_for(timeout=TIMEOUT_MS)


def messages(page) -> list[str]:
    return page.locator("#messages li").all_inner_texts()


def test_two_browser_tabs_chat_through_the_docs_page(chat_server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            alice = browser.new_page()
            alice.goto(chat_server.http_url("/").replace("127.0.0.1", "localhost"))
            alice_id = alice.locator("#ws-id").inner_text()
            bob = browser.new_page()
            bob.goto(chat_server.http_url("/").replace("127.0.0.1", "localhost"))
            bob_id = bob.locator("#ws-id").inner_text()
            assert alice_id and bob_id

            # Both sockets are open once each tab can talk to itself.
            send(alice, "hello from alice")
            wait_for_message(alice, "You wrote: hello from alice")
            wait_for_message(bob, f"Client #{alice_id} says: hello from alice")

            send(bob, "hi alice")
            wait_for_message(bob, "You wrote: hi alice")
            wait_for_message(alice, f"Client #{bob_id} says: hi alice")

            bob.close()
            wait_for_message(alice, f"Client #{bob_id} left the chat")
            assert messages(alice)[0] == "You wrote: hello from alice"
        finally:
            browser.close()
