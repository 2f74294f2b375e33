"""The dashboard in headless chromium: sign-in, live matches arriving over SSE, feedback, chart, every page.

A screenshot of each page is kept under test-artifacts/browser/.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from api_support import Api, match, produce_matches
from conftest import ARTIFACTS
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from wirewatch import registry, state
from wirewatch.records import Feed, Topic

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _sign_in(driver: Any, api: Api, secret: str) -> None:
    driver.get(api.base_url + "/ui/")
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "api_key")))
    assert driver.current_url.endswith("/ui/login"), "a page without a key sends you to sign in"
    box = driver.find_element(By.ID, "api_key")
    box.send_keys(secret)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "matches")))


def _console_errors(driver: Any) -> list[str]:
    try:
        logs = driver.get_log("browser")
    except Exception:  # noqa: BLE001 - some drivers have no log endpoint
        return []
    return [entry["message"] for entry in logs if entry.get("level") == "SEVERE"
            and "favicon" not in entry["message"]]


def test_wrong_key_is_refused_with_a_message(live_api: Api, browser: Any) -> None:
    browser.get(live_api.base_url + "/ui/login")
    box = browser.find_element(By.ID, "api_key")
    box.send_keys("ww_nope_aaaaaaaaaaaaaaaaaaaaaaaa")
    box.send_keys(Keys.ENTER)
    alert = WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "[role=alert]")))
    assert "not valid" in alert.text
    _shot(browser, "login-refused")


def test_live_match_appears_and_takes_feedback(live_api: Api, browser: Any) -> None:
    r = state.connect(live_api.settings)
    registry.topics(r, live_api.settings).put(Topic(id="quakes", name="Earthquakes", description="earthquakes"))
    _sign_in(browser, live_api, live_api.admin)
    WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "stream-state").text == "live")
    hub = live_api.app.state.ww.extras["hub"]
    assert hub.count() == 1
    produce_matches(live_api.settings, [match("quakes", "Magnitude 6.1 quake strikes off the coast")])
    item = WebDriverWait(browser, 15).until(ec.presence_of_element_located(
        (By.XPATH, "//ol[@id='matches']/li[contains(., 'Magnitude 6.1 quake')]")))
    assert "quakes" in item.text
    _shot(browser, "live")
    item.find_element(By.CSS_SELECTOR, "button[aria-label='Relevant']").click()
    toast = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "toast").text or None)
    assert "version 2" in toast
    t = registry.topics(r, live_api.settings).get("quakes")
    assert t is not None and t.version == 2 and t.examples
    browser.refresh()
    legend = WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "chart-legend").text or None)
    assert "quakes (1)" in legend
    assert browser.find_elements(By.CSS_SELECTOR, "#chart svg polyline"), "the chart is drawn"
    _shot(browser, "live-chart")
    assert _console_errors(browser) == []


def test_keyboard_skip_link_and_navigation(live_api: Api, browser: Any) -> None:
    _sign_in(browser, live_api, live_api.alice)
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    active = browser.switch_to.active_element
    assert active.text == "Skip to content"
    active.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    body.send_keys(Keys.TAB)  # from main, Tab continues into the page
    links = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert links == ["Live", "Topics", "Subscriptions", "Feeds", "Deliveries"]


def test_every_page_renders(live_api: Api, browser: Any) -> None:
    r = state.connect(live_api.settings)
    registry.topics(r, live_api.settings).put(Topic(id="floods", name="Floods", description="river floods",
                                                    examples=("River bursts its banks",), since="2026-01-15"))
    registry.feeds(r, live_api.settings).put(Feed(id="f1", url="https://news.example.com/rss", name="Example"))
    _sign_in(browser, live_api, live_api.admin)
    for path, name, marker in [
        ("/ui/topics", "topics", "2026-01-15 – …"),  # the topic's window, open at its end
        ("/ui/topics/floods", "topic-editor", "Preview on recent articles"),
        ("/ui/topics/new", "topic-new", "New topic"),
        ("/ui/subscriptions", "subscriptions", "New subscription"),
        ("/ui/feeds", "feeds", "news.example.com"),
        ("/ui/deliveries", "deliveries", "Delivery log"),
        ("/ui/stories/s1", "story", "Story"),
    ]:
        browser.get(live_api.base_url + path)
        WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "main")))
        assert marker in browser.find_element(By.ID, "main").text, path
        _shot(browser, name)


def test_openapi_docs_render_from_local_files(live_api: Api, browser: Any) -> None:
    """/docs is Swagger UI served by the app itself: it renders every operation with no CDN reachable.

    Like the schema it needs a key; the dashboard's sign-in cookie is one.
    """
    _sign_in(browser, live_api, live_api.admin)
    browser.get(live_api.base_url + "/docs")
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "/v1/matches" in text and "/v1/feedback" in text
    sources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(s.startswith(live_api.base_url) for s in sources), sources
    _shot(browser, "docs")


def _seed_recent(api: Api, titles: list[str]) -> None:
    from api_support import article

    from classify.api import classifier_for
    from classify.recent import RecentStore

    arts = [article(t) for t in titles]
    classifier = classifier_for(api.settings)
    vectors = classifier.embed([classifier.text_of(a) for a in arts])
    RecentStore(state.connect(api.settings), api.settings).add(arts, vectors)


def test_topic_editor_previews_as_you_type_and_saves(live_api: Api, browser: Any) -> None:
    _seed_recent(live_api, ["Earthquake of magnitude 6.8 shakes southern Turkey, buildings collapse",
                            "Aftershocks rattle villages a day after deadly quake",
                            "Central bank holds interest rates steady", "Football club signs new striker"])
    _sign_in(browser, live_api, live_api.alice)
    browser.get(live_api.base_url + "/ui/topics/new")
    browser.find_element(By.ID, "t-id").send_keys("quakes")
    browser.find_element(By.ID, "t-name").send_keys("Earthquakes")
    browser.find_element(By.ID, "t-description").send_keys("Earthquakes, aftershocks and the damage they cause")
    summary = WebDriverWait(browser, 90).until(lambda d: next(
        (li.text for li in d.find_elements(By.CSS_SELECTOR, "#preview li.summary") if "would match" in li.text), None))
    assert "of 4 recent articles would match" in summary
    scored = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#preview li.pass, #preview li.fail")]
    assert scored and "quake" in scored[0].lower(), scored
    _shot(browser, "topic-preview")
    browser.find_element(By.ID, "t-include-all").send_keys("quake*|earthquake*")
    browser.find_element(By.ID, "t-desk").send_keys("science")
    # A date field's typing order follows the browser's locale; set its value as the date picker would.
    browser.execute_script("document.getElementById('t-until').value = '2026-03-31'")
    browser.find_element(By.ID, "t-description").send_keys(Keys.TAB)
    browser.find_element(By.CSS_SELECTOR, "#topic-form button[type=submit]").click()
    WebDriverWait(browser, 15).until(lambda d: d.current_url.endswith("/ui/topics/quakes"))
    t = registry.topics(state.connect(live_api.settings), live_api.settings).get("quakes")
    assert t is not None and t.owner == live_api.alice_id and t.version == 1
    assert t.desk == "science" and t.include_all == ("quake*|earthquake*",)
    assert t.since is None and t.until == datetime(2026, 4, 1, tzinfo=UTC)  # to the end of the day chosen
    # The editor shows the window as it was chosen, so saving the topic again keeps it.
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "t-until").get_attribute("value") == "2026-03-31")
    assert browser.find_element(By.ID, "t-since").get_attribute("value") == ""
    _shot(browser, "topic-saved")


class _Hook(__import__("http.server").server.BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_subscribe_a_local_webhook_and_send_a_test(live_api: Api, browser: Any) -> None:
    import http.server
    import threading

    registry.topics(state.connect(live_api.settings), live_api.settings).put(
        Topic(id="quakes", name="Earthquakes", description="earthquakes"))
    _Hook.received = []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        _sign_in(browser, live_api, live_api.alice)
        browser.get(live_api.base_url + "/ui/subscriptions")
        WebDriverWait(browser, 10).until(lambda d: "Loading" not in d.find_element(By.ID, "subs-body").text)
        browser.find_element(By.ID, "s-id").send_keys("desk-hook")
        browser.find_element(By.ID, "s-target").send_keys("http://10.0.0.5/hook")
        browser.find_element(By.CSS_SELECTOR, "#sub-form button[type=submit]").click()
        err = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "form-error").text or None)
        assert "channel.target" in err and "private" in err, "a webhook into the private network is refused"
        target = browser.find_element(By.ID, "s-target")
        target.clear()
        target.send_keys(f"http://127.0.0.1:{hook.server_address[1]}/hook")
        browser.find_element(By.CSS_SELECTOR, "#sub-form button[type=submit]").click()
        row = WebDriverWait(browser, 10).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "tr[data-sub='desk-hook']")))
        assert "webhook" in row.text and "quakes" in row.text
        sub = registry.subscriptions(state.connect(live_api.settings), live_api.settings).get("desk-hook")
        assert sub is not None and sub.owner == live_api.alice_id
        row.find_element(By.CSS_SELECTOR, "button.sub-test").click()
        def settled(d: Any) -> str | None:
            text: str = d.find_element(By.ID, "toast").text
            return text if text and "Subscribed" not in text else None

        toast = WebDriverWait(browser, 20).until(settled)
        assert "Test sent" in toast, toast
        assert _Hook.received, "the local webhook got the test notification"
        _shot(browser, "subscriptions")
    finally:
        hook.shutdown()
        hook.server_close()


def test_story_page_lists_its_sources(live_api: Api, browser: Any) -> None:
    import numpy as np

    from alerts.stories import StoryFolder

    registry.topics(state.connect(live_api.settings), live_api.settings).put(
        Topic(id="quakes", name="Earthquakes", description="earthquakes"))
    vec = np.ones(384, dtype=np.float32) / np.sqrt(384)
    first = match("quakes", "Quake hits the coast")
    second = match("quakes", "Quake hits the coast, buildings damaged")
    first = first.model_copy(update={"vector": tuple(vec.tolist()), "article": first.article.model_copy(
        update={"source": "Wire One"})})
    second = second.model_copy(update={"vector": tuple(vec.tolist()), "article": second.article.model_copy(
        update={"source": "Daily Two"})})
    folded = StoryFolder(state.connect(live_api.settings), live_api.settings).fold([first, second])
    story_id = folded[0].story.id
    assert folded[1].story.id == story_id
    _sign_in(browser, live_api, live_api.admin)
    link = WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#stories a")))
    link.click()
    WebDriverWait(browser, 10).until(lambda d: "Sources:" in d.find_element(By.ID, "story").text)
    text = browser.find_element(By.ID, "story").text
    assert "Wire One" in text and "Daily Two" in text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#story ol.sources li")) == 2
    _shot(browser, "story")


def test_delivery_log_and_feed_health_pages_show_their_rows(live_api: Api, browser: Any) -> None:
    from datetime import UTC, datetime

    from alerts.recorder import RecentDeliveries
    from wirewatch.records import Delivery, DeliveryStatus

    r = state.connect(live_api.settings)
    registry.feeds(r, live_api.settings).put(Feed(id="f1", url="https://news.example.com/rss", name="Example"))
    now = datetime.now(UTC)
    RecentDeliveries(r, live_api.settings).add([
        Delivery(id="d1", subscription_id="desk", topic_id="quakes", story_id="story-1", status=DeliveryStatus.SENT,
                 attempts=1, sent_at=now),
        Delivery(id="d2", subscription_id="desk", topic_id="quakes", story_id="story-2",
                 status=DeliveryStatus.FAILED, reason="HTTP 500 after 5 attempts", attempts=5),
    ])
    _sign_in(browser, live_api, live_api.admin)
    browser.get(live_api.base_url + "/ui/deliveries")
    table = WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#deliveries table")))
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 2
    assert "HTTP 500 after 5 attempts" in table.text and "sent" in table.text
    assert rows[0].get_attribute("class") in ("status-failed", "status-sent")
    _shot(browser, "deliveries-rows")
    browser.get(live_api.base_url + "/ui/feeds")
    WebDriverWait(browser, 10).until(lambda d: "Last success" in d.find_element(By.ID, "feeds-table").text)
    text = browser.find_element(By.ID, "feeds-table").text
    assert "news.example.com" in text and "pending" in text and "never" in text
    unset = browser.find_element(By.CSS_SELECTOR, "#feeds-table select[data-full-text]")
    assert unset.find_element(By.CSS_SELECTOR, "option:checked").text == "default (never)"
    _shot(browser, "feeds-health")
