"""A rollout in the dashboard: created with the CLI over the simulated fleet, its waves' counts
move on the page without a reload, it is paused from the page (and the engine is paused), a
read-only policy sees no command buttons and cannot pause it, and a device's page shows its
attempt in the rollout."""

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from test_dashboard import assert_no_stray_null, sign_in, text_of, visible, wait

SPEC = """
target = "tags.product = 'aq'"
soak_secs = 5
max_silence_secs = 900
device_timeout_secs = 1200
[artifact]
version = "2.1.0"
sha256 = "the upload of 2.1.0"
[[waves]]
name = "canary"
select = { percent = 10 }
success = { percent = 100 }
failure = { count = 0 }
[[waves]]
name = "rest"
select = { percent = 100 }
batch = { size = 2, interval_secs = 20 }
success = { percent = 98 }
failure = { percent = 50 }
"""


def updated(browser):
    return text_of(browser, "#ro-updated .value")


def test_a_rollout_updates_live_and_is_paused_from_the_page(browser, hub, shots):
    image = hub.workdir / "fw-2.1.0.bin"
    image.write_bytes(bytes(range(256)) * 32)
    hub.cli("firmware", "upload", str(image), "--version", "2.1.0", "--model", "esp32")
    spec = hub.workdir / "rollout.toml"
    spec.write_text(SPEC)
    hub.cli("rollout", "create", "night", "--file", str(spec))

    browser.delete_all_cookies()
    sign_in(browser, hub, "iothubowner", hub.owner_key())
    browser.get(hub.base_url + "/#/rollouts/night")
    visible(browser, "tr[data-wave=canary]")
    browser.execute_script("window.__sameDocument = true")
    before = updated(browser)
    wait(browser, lambda b: updated(b) not in ("", before), timeout=60)
    wait(browser, lambda b: "passed" in text_of(b, "tr[data-wave=canary]"), timeout=60)
    assert browser.execute_script("return window.__sameDocument") is True, "the page was reloaded"
    assert_no_stray_null(browser)
    shots(browser, "rollout")

    browser.find_element(By.ID, "rollout-pause").click()
    visible(browser, "#confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait(browser, lambda b: "paused" in text_of(b, "#rollout-status"))
    assert hub.rest("GET", "/v1/rollouts/night").json()["status"] == "paused"
    visible(browser, "#rollout-resume")
    assert "paused" in text_of(browser, "#rollout-trail")
    shots(browser, "rollout-paused")


def test_a_read_only_policy_cannot_command_a_rollout(browser, hub):
    browser.delete_all_cookies()
    sign_in(browser, hub, "registryRead", hub.policy_key("registryRead"))
    browser.get(hub.base_url + "/#/rollouts/night")
    visible(browser, "tr[data-wave=rest]")
    assert browser.find_elements(By.ID, "rollout-actions") == []
    assert_no_stray_null(browser)
    answer = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        (async () => {
          const session = await (await fetch('/dashboard/session')).json();
          const r = await fetch('/v1/rollouts/night/resume', {method: 'POST',
            headers: {'content-type': 'application/json', 'x-fleethub-csrf': session.csrfToken}, body: '{}'});
          done({status: r.status, body: await r.json()});
        })();
    """)
    assert answer["status"] == 401, answer
    assert "does not grant RegistryWrite" in answer["body"]["message"], answer
    assert hub.rest("GET", "/v1/rollouts/night").json()["status"] == "paused"


def test_the_rollouts_list_and_the_firmware_pages_show_the_rollout_and_its_downloads(browser, hub):
    browser.get(hub.base_url + "/#/rollouts")
    link = visible(browser, "#page a[href='#/rollouts/night']")
    row = link.find_element(By.XPATH, "./ancestor::tr")
    assert "paused" in row.text and "2.1.0" in row.text, row.text
    link.click()
    visible(browser, "tr[data-wave=canary]")

    browser.get(hub.base_url + "/#/firmware")
    link = visible(browser, "#page tbody a[href^='#/firmware/']")
    assert link.text == "2.1.0"
    link.click()
    wait(browser, lambda b: text_of(b, "#page h1") == "Firmware 2.1.0")
    # The canary wave's devices downloaded the image during the first test.
    devices = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#page tbody td a")]
    assert devices and all(d.startswith("sim-") for d in devices), devices
    assert browser.find_elements(By.CSS_SELECTOR, "#page .error") == []
    assert_no_stray_null(browser)


def test_a_device_page_shows_its_rollout_attempt(browser, hub, shots):
    devices = hub.rest("GET", "/v1/rollouts/night/devices").json()
    # The canary wave passed in the first test: its devices are updated.
    device = next(d["id"] for d in devices if d["state"] == "updated" and d["wave"] == 0)
    browser.delete_all_cookies()
    sign_in(browser, hub, "iothubowner", hub.owner_key())
    browser.get(hub.base_url + f"/#/devices/{device}")
    row = visible(browser, "#firmware-history tr[data-rollout=night]")
    assert text_of(browser, "#firmware-history h2") == "Firmware history: rollout attempts"
    cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")]
    assert cells[0] == "night" and cells[1] == "canary" and cells[2] == "updated", cells
    assert cells[4] == "1.4.2 → 2.1.0", cells
    assert cells[6] != "—", f"an updated attempt has a finish time: {cells}"
    # (The twin's own JSON may hold nulls; the history must not print an absent part as one.)
    assert "null" not in text_of(browser, "#firmware-history").split(), cells
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "firmware-history"))
    shots(browser, "device-rollouts")
    # The rollout opens from the row with the keyboard.
    link = row.find_element(By.CSS_SELECTOR, "a[href='#/rollouts/night']")
    browser.execute_script("arguments[0].focus()", link)
    assert browser.switch_to.active_element == link
    link.send_keys(Keys.ENTER)
    visible(browser, "tr[data-wave=canary]")
