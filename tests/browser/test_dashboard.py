"""The dashboard in a real browser against a real hub with a simulated fleet: sign in, read the
overview, watch it update live, query with an error then without, open a device and change it,
and a read-only policy that sees no buttons and whose changes the server refuses."""

import time

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import DEVICES
from waiting import wait_until

TIMEOUT = 20


def wait(browser, condition, timeout=TIMEOUT):
    # Live pages redraw: an element read mid-redraw is gone, and the condition is asked again.
    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def visible(browser, css, timeout=TIMEOUT):
    return wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout)


def text_of(browser, css):
    return browser.find_element(By.CSS_SELECTOR, css).text


def assert_no_stray_null(browser):
    """Regression: a page built with el.replaceChildren(..., cond ? node : null) printed "null"
    (a running rollout's absent reason, a read-only policy's missing buttons)."""
    words = text_of(browser, "#page").split()
    assert "null" not in words, f"the page prints null: {text_of(browser, '#page')[:300]}"


def sign_in(browser, hub, policy, key):
    browser.get(hub.base_url + "/")
    visible(browser, "#sign-in-form")
    name = browser.find_element(By.ID, "sign-in-policy")
    name.clear()
    name.send_keys(policy)
    browser.find_element(By.ID, "sign-in-key").send_keys(key, Keys.ENTER)
    visible(browser, "#devices-total")


def sign_out(browser):
    browser.find_element(By.ID, "sign-out").click()
    visible(browser, "#sign-in-form")


def test_a_wrong_key_is_refused_and_the_right_one_signs_in(browser, hub, shots):
    browser.get(hub.base_url + "/")
    visible(browser, "#sign-in-form")
    shots(browser, "sign-in")
    browser.find_element(By.ID, "sign-in-key").send_keys("not-the-key", Keys.ENTER)
    error = visible(browser, "#sign-in-error")
    assert "no shared access policy has that name and key" in error.text
    assert browser.find_element(By.ID, "nav").get_attribute("hidden") is not None

    sign_in(browser, hub, "iothubowner", hub.owner_key())
    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = cookies["fleethub_session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict", session
    assert browser.execute_script("return document.cookie") == "", "scripts cannot read the session"


def test_the_overview_shows_the_fleet_and_firmware_in_semver_order(browser, hub, shots):
    wait_until(lambda: text_of(browser, "#devices-total .value") == str(DEVICES), message="device total")
    wait(browser, lambda b: text_of(b, "#devices-connected .value") == str(DEVICES))
    rows = browser.find_elements(By.CSS_SELECTOR, "section[aria-labelledby=fw-title] tbody tr")
    versions = [r.get_attribute("data-version") for r in rows]
    assert versions == ["1.4.2"], versions
    assert "idle" in text_of(browser, "section[aria-labelledby=st-title]")
    visible(browser, "#recent-events li")
    shots(browser, "overview")


def test_the_overview_updates_live_without_a_reload(browser, hub):
    browser.execute_script("window.__sameDocument = true")
    hub.rest("PUT", "/devices/late-arrival", json={"deviceId": "late-arrival"}).raise_for_status()
    wait(browser, lambda b: "late-arrival" in text_of(b, "#recent-events"))
    wait(browser, lambda b: text_of(b, "#devices-total .value") == str(DEVICES + 1))
    assert browser.execute_script("return window.__sameDocument") is True, "the page was reloaded"


def test_a_query_error_points_at_the_spot_and_a_correct_query_pages(browser, hub, shots):
    browser.find_element(By.CSS_SELECTOR, "a[data-nav=devices]").click()
    visible(browser, "#results table")
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys("SELECT * FROM devices WHERE properties.reported.firmware.status = ")
    browser.find_element(By.ID, "run-query").click()
    error = visible(browser, "#query-error")
    lines = error.text.splitlines()
    assert any(line.strip() == "^" for line in lines), error.text
    caret_line = next(i for i, line in enumerate(lines) if line.strip() == "^")
    assert lines[caret_line - 1].rstrip().endswith("="), "the caret sits under the end of the query"
    assert box.get_attribute("aria-invalid") == "true"
    shots(browser, "devices-query-error")

    box.clear()
    box.send_keys("SELECT * FROM devices WHERE properties.reported.firmware.status = 'idle'")
    browser.find_element(By.ID, "run-query").click()
    wait(browser, lambda b: not b.find_element(By.ID, "query-error").is_displayed())
    visible(browser, "#results table")
    assert box.get_attribute("aria-invalid") is None
    ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#results tbody th a")]
    assert len(ids) == DEVICES and all(i.startswith("sim-") for i in ids), ids
    shots(browser, "devices")


def test_a_device_page_shows_its_twin_firmware_and_telemetry_and_edits_desired(browser, hub, shots):
    browser.find_element(By.CSS_SELECTOR, "#results tbody th a").click()
    device = visible(browser, "#device-id").text
    assert text_of(browser, "#fw-current") == "1.4.2"
    visible(browser, "#telemetry-plot")
    patch = browser.find_element(By.ID, "desired-patch")
    patch.clear()
    patch.send_keys('{"ledColour": "amber"}')
    browser.find_element(By.ID, "desired-save").click()
    visible(browser, "#confirm")
    shots(browser, "device-confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait(browser, lambda b: "Saved." in text_of(b, "#desired-result"))
    wait(browser, lambda b: "amber" in text_of(b, "#twin-desired"))
    twin = hub.rest("GET", f"/twins/{device}").json()
    assert twin["properties"]["desired"]["ledColour"] == "amber"
    shots(browser, "device")


def call_method(browser, name):
    field = browser.find_element(By.ID, "method-name")
    field.clear()
    field.send_keys(name)
    browser.find_element(By.ID, "method-call").click()
    visible(browser, "#confirm")
    browser.find_element(By.ID, "confirm-ok").click()


def test_a_method_called_from_the_device_page_shows_the_devices_answer(browser, hub):
    # Still on the device page of the test before: a simulated device, connected.
    call_method(browser, "diagnostics")
    wait(browser, lambda b: text_of(b, "#method-result").startswith("status 200"))
    assert "error" not in browser.find_element(By.ID, "method-result").get_attribute("class")
    call_method(browser, "no_such_method")
    wait(browser, lambda b: "no_such_method" in text_of(b, "#method-result"))
    answer = text_of(browser, "#method-result")
    assert "status 404" in answer and "reboot" in answer, answer


def test_a_read_only_policy_sees_no_buttons_and_the_server_refuses_its_changes(browser, hub, shots):
    sign_out(browser)
    sign_in(browser, hub, "registryRead", hub.policy_key("registryRead"))
    assert "read-only" in text_of(browser, "#policy")
    browser.get(hub.base_url + "/#/devices/sim-1")
    visible(browser, "#fw-current")
    assert browser.find_elements(By.ID, "desired-form") == []
    assert browser.find_elements(By.ID, "method-form") == []
    shots(browser, "device-read-only")

    # The same request the owner's page sent, from this session with its CSRF token: refused.
    answer = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        (async () => {
          const session = await (await fetch('/dashboard/session')).json();
          const r = await fetch('/twins/sim-1', {method: 'PATCH',
            headers: {'content-type': 'application/json', 'x-fleethub-csrf': session.csrfToken},
            body: JSON.stringify({properties: {desired: {ledColour: 'red'}}})});
          done({status: r.status, body: await r.json()});
        })();
    """)
    assert answer["status"] == 401, answer
    assert "does not grant ServiceConnect" in answer["body"]["message"], answer
    assert hub.rest("GET", "/twins/sim-1").json()["properties"]["desired"].get("ledColour") != "red"


def test_a_change_without_the_csrf_token_is_refused(browser, hub):
    sign_out(browser)
    sign_in(browser, hub, "iothubowner", hub.owner_key())
    answer = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/twins/sim-2', {method: 'PATCH', headers: {'content-type': 'application/json'},
              body: JSON.stringify({properties: {desired: {ledColour: 'red'}}})})
          .then(async r => done({status: r.status, body: await r.json()}));
    """)
    assert answer["status"] == 401, answer
    assert "CSRF" in answer["body"]["message"], answer


def test_the_one_time_sign_in_link_works_once(phone, hub, shots):
    link = hub.ready["signInLink"]
    phone.get(link)
    visible(phone, "#devices-total")
    assert "#signin" not in phone.current_url, "the token is dropped from the address bar"
    wait_until(lambda: text_of(phone, "#devices-total .value") != "", message="overview on a phone")
    shots(phone, "overview-phone")
    wide = phone.execute_script("""
        return [...document.querySelectorAll('body *')]
          .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
          .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5);
    """)
    assert wide == [], f"the overview fits a phone's width; wider: {wide}"
    phone.delete_all_cookies()
    phone.get("about:blank")
    phone.get(link)
    error = visible(phone, "#sign-in-error")
    assert "already used" in error.text


def test_pages_of_jobs_configurations_and_firmware_render(browser, hub):
    hub.rest("PUT", "/configurations/blue-leds", json={
        "id": "blue-leds", "priority": 10, "targetCondition": "deviceId = 'sim-3'",
        "content": {"deviceContent": {"properties.desired.ledColour": "blue"}},
    }).raise_for_status()
    hub.cli("jobs", "create", "green-leds", "--where", "deviceId = 'sim-4'",
            "--set", "desired.ledColour=green", "--wait")
    for nav, expect in (("configurations", "blue-leds"), ("jobs", "green-leds"), ("firmware", "Firmware")):
        browser.get(f"{hub.base_url}/#/{nav}")
        wait(browser, lambda b: expect in text_of(b, "#page"))
        assert browser.find_elements(By.CSS_SELECTOR, "#page .error") == []
    browser.get(f"{hub.base_url}/#/configurations/blue-leds")
    wait(browser, lambda b: "deviceId = 'sim-3'" in text_of(b, "#page"))
    assert_no_stray_null(browser)


def test_a_job_opens_from_the_list_with_its_statistics_and_device_rows(browser, hub):
    browser.get(f"{hub.base_url}/#/jobs")
    visible(browser, "#page a[href='#/jobs/green-leds']").click()
    wait(browser, lambda b: "Job green-leds" in text_of(b, "#page h1"))
    facts = text_of(browser, "#page .facts")
    assert "completed" in facts and "deviceId = 'sim-4'" in facts, facts
    rows = browser.find_elements(By.CSS_SELECTOR, "#page tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, "td a").text for r in rows] == ["sim-4"]
    assert "completed" in rows[0].text, rows[0].text
    assert browser.find_elements(By.CSS_SELECTOR, "#page .error") == []
    assert_no_stray_null(browser)


# Every visible text on the page against the background it is drawn on (the nearest ancestor
# with one, semi-transparent colours blended over what lies beneath), as WCAG 2 computes the
# contrast ratio; and every control with an accessible name and reachable from the keyboard.
ACCESSIBILITY_PROBE = r"""
const rgba = (css) => {
  const m = css.match(/rgba?\(([^)]+)\)/);
  if (!m) return [255, 255, 255, 1];
  const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
const background = (el) => {
  const layers = [];
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
  }
  return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]);
};
const luminance = (c) => {
  const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => { const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const shown = (el) => {
  const s = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  return s.visibility !== 'hidden' && s.display !== 'none' && box.width > 0 && box.height > 0 && !el.closest('[hidden]');
};
const low = [];
for (const el of document.querySelectorAll('body *')) {
  if (el.closest('svg') || el.matches(':disabled') || !shown(el)) continue;
  const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent.trim()).join(' ');
  if (!own) continue;
  const s = getComputedStyle(el);
  const size = parseFloat(s.fontSize), bold = parseInt(s.fontWeight, 10) >= 700;
  const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  const bg = background(el);
  const r = ratio(over(rgba(s.color), bg), bg);
  if (r < need) low.push(`${el.tagName.toLowerCase()}.${el.className} "${own.slice(0, 40)}": ${r.toFixed(2)} < ${need}`);
}
const unnamed = [];
for (const el of document.querySelectorAll('a[href], button, input, select, textarea')) {
  if (!shown(el) || el.type === 'hidden') continue;
  const named = (el.getAttribute('aria-label') || '').trim() || el.getAttribute('aria-labelledby')
    || (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest('label')
    || (['A', 'BUTTON'].includes(el.tagName) && el.textContent.trim()) || (el.title || '').trim();
  if (!named) unnamed.push(el.outerHTML.slice(0, 80));
  if (el.tabIndex < 0) unnamed.push('not reachable by keyboard: ' + el.outerHTML.slice(0, 80));
}
return {low, unnamed};
"""


def settled(browser):
    """Gives the page's data time to be drawn: until its text reads the same twice, half a second
    apart, or five seconds on a live page that keeps changing (the scan then sees it as it is)."""
    last = None
    for _ in range(10):
        try:
            now = text_of(browser, "#page")
        except StaleElementReferenceException:
            now = None
        if now is not None and now == last:
            return
        last = now
        time.sleep(0.5)


def test_every_page_reads_at_wcag_aa_contrast_with_named_keyboard_reachable_controls(browser, hub):
    pages = ["", "#/devices", "#/devices/sim-1", "#/rollouts", "#/jobs", "#/configurations",
             "#/firmware"]
    for page in pages:
        browser.get(f"{hub.base_url}/{page}")
        wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#page h1"))
        settled(browser)
        found = browser.execute_script(ACCESSIBILITY_PROBE)
        assert found["low"] == [], f"{page or 'overview'}: text below WCAG AA contrast: {found['low']}"
        assert found["unnamed"] == [], f"{page or 'overview'}: controls without a name: {found['unnamed']}"
