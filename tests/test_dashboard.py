"""The web dashboard at /ui in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, which .ci/run installs) driven by Selenium against the real server.

It logs in, sees a topic's chart move while a producer runs, saves a screenshot, and says so
clearly when the session is revoked and when the server goes away.
"""

from __future__ import annotations

import os
import shutil
import urllib.request

import orjson
import pytest

from conftest import ServerProcess, wait_for
from iggy_fast.testing import producing

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver")


def http(srv, method, path, body=None, token=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{srv.http_port}{path}", method=method,
        data=orjson.dumps(body) if body is not None else None,
        headers={"content-type": "application/json",
                 **({"authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=10) as reply:
        data = reply.read()
    return orjson.loads(data) if data else None


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def text_of(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_dashboard_logs_in_charts_a_producer_and_survives_expiry_and_outage(
        tmp_path, browser):
    srv = ServerProcess(tmp_path / "server").start()
    try:
        token = http(srv, "POST", "/users/login",
                     {"username": "iggy", "password": "iggy"})["access_token"]["token"]
        http(srv, "POST", "/streams", {"name": "shop"}, token)
        http(srv, "POST", "/streams/shop/topics",
             {"name": "orders", "partitions_count": 2, "compression_algorithm": "none",
              "message_expiry": 0, "max_topic_size": 0, "options": {}}, token)

        browser.get(f"http://127.0.0.1:{srv.http_port}/ui")
        assert browser.current_url.endswith("/ui/")
        assert wait_for(lambda: browser.find_element("id", "login-view").is_displayed())
        browser.find_element("id", "username").send_keys("iggy")
        browser.find_element("id", "password").send_keys("iggy")
        browser.find_element("id", "login-button").click()
        assert wait_for(lambda: "orders" in text_of(browser, "topics")), \
            browser.page_source[-2000:]

        # A producer runs: the topic's line in the "in" chart leaves zero.
        with producing(srv.address, "shop", "orders", partition_id=1, pause=0.01):
            assert wait_for(lambda: int(browser.find_element("id", "chart-in")
                                        .get_attribute("data-points") or 0) >= 2, 30), \
                text_of(browser, "banner")
            assert wait_for(lambda: any(
                cell.text not in ("–", "0") for cell in browser.find_elements(
                    "css selector", "#topics tbody td:nth-child(7)")), 10)
        screenshot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        shots = os.environ.get("IGGY_FAST_SCREENSHOTS")
        if shots:
            shutil.copy(screenshot, os.path.join(shots, "dashboard.png"))

        # The topic is deleted while shown: it leaves the table, no error appears.
        http(srv, "DELETE", "/streams/shop/topics/orders", token=token)
        assert wait_for(lambda: "orders" not in text_of(browser, "topics"), 15)
        assert not browser.find_element("id", "banner").is_displayed()

        # The page's own token is revoked: it says the session ended and asks for a login.
        page_token = browser.execute_script("return sessionStorage.getItem('iggy-token')")
        http(srv, "DELETE", "/users/logout", token=page_token)
        assert wait_for(lambda: browser.find_element("id", "login-view").is_displayed(), 10)
        assert "session has expired" in text_of(browser, "banner")

        # Logged in again, then the server goes away: the banner says so.
        assert browser.find_element("id", "password").get_attribute("value") == ""
        browser.find_element("id", "username").clear()
        browser.find_element("id", "username").send_keys("iggy")
        browser.find_element("id", "password").send_keys("iggy")
        browser.find_element("id", "login-button").click()
        assert wait_for(lambda: browser.find_element("id", "dashboard").is_displayed(), 10)
        srv.stop()
        assert wait_for(lambda: "not answering" in text_of(browser, "banner"), 10)
    finally:
        srv.stop()
        srv.cleanup()
