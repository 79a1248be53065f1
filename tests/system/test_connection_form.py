"""The Baseten connection form in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) logs into the api-server, opens Admin -> Connections -> Add Connection, picks "Baseten", sees the
API Key field and every declared extra with its label, saves a connection pointing at the emulator and tests it.

Screenshots go to ``artifacts/`` (gitignored): ``connection-form.png`` (the filled form, extras open) and
``connection-test.png`` (the list with the "Test Connection" result).

Airflow 3.3.2's UI sends ``port: 0`` when the Port field is empty, and the test endpoint then refuses to reuse the
stored key ("host or port differs"), so the form fills Port explicitly (the provider honours it with a gateway URL).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.harness import ADMIN_PASSWORD, ADMIN_USER, REPO_ROOT, AirflowCluster

pytestmark = [pytest.mark.system, pytest.mark.browser]

ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1700",
)
WAIT_S = 30


def _binary(*names: str) -> str | None:
    for name in names:
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = _binary("chromium", "chromium-browser", "google-chrome")
    driver_path = _binary("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium needs Debian's chromium and chromium-driver (apt-get install; .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="systest-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_connection_form_in_chromium(
    airflow_cluster: AirflowCluster,
    emulator: Any,
    system_api_key: str,
    browser: Any,
    phase: Callable[[str], None],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from airflow_provider_baseten.get_provider_info import get_provider_info

    (conn_type,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "baseten"]
    labels = {name: spec["label"] for name, spec in conn_type["conn-fields"].items()}
    wait = WebDriverWait(browser, WAIT_S)

    def click(xpath: str) -> None:
        wait.until(ec.element_to_be_clickable((By.XPATH, xpath))).click()

    def dialog_text() -> str:
        return str(browser.find_element(By.CSS_SELECTOR, "[role=dialog]").text)

    browser.get(airflow_cluster.api_url + "/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(ADMIN_USER)
    browser.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    click("//button[normalize-space()='Admin']")
    click("//a[normalize-space()='Connections']")
    click("//button[normalize-space()='Add Connection']")
    phase("logged in, form open")

    wait.until(ec.presence_of_element_located((By.NAME, "connection_id"))).send_keys("baseten_ui")
    conn_type_input = browser.find_element(
        By.XPATH, "//label[starts-with(normalize-space(), 'Connection Type')]/following::input[1]"
    )
    conn_type_input.send_keys("Baseten")
    # "Baseten" also matches "Pydantic AI (Baseten)": click the exact option.
    wait.until(ec.element_to_be_clickable((By.XPATH, "//*[@role='option'][normalize-space()='Baseten']"))).click()

    # Standard fields, relabelled by the provider's ui-field-behaviour; login and schema hidden.
    password = wait.until(ec.visibility_of_element_located((By.NAME, "password")))
    assert password.get_attribute("type") == "password"
    standard = dialog_text()
    assert "API Key" in standard
    assert "Gateway URL (optional)" in standard
    assert not browser.find_elements(By.NAME, "login")
    browser.find_element(By.NAME, "host").send_keys("http://127.0.0.1")
    browser.find_element(By.NAME, "port").send_keys(str(emulator.port))
    password.send_keys(system_api_key)

    # The declared extras, each with its label (the accordion shows one section at a time).
    click("//button[normalize-space()='Extra Fields']")
    wait.until(ec.visibility_of_element_located((By.NAME, "element_timeout"))).send_keys("30")
    browser.find_element(By.NAME, "element_max_retries").send_keys("2")
    extras = dialog_text()
    missing = [label for label in labels.values() if label not in extras]
    assert not missing, f"extras without their label in the form: {missing}"
    for name in labels:
        assert browser.find_elements(By.NAME, f"element_{name}"), f"no input for extra {name!r}"
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "connection-form.png"))
    phase("form filled")

    click("//button[normalize-space()='Save']")
    wait.until(ec.presence_of_element_located((By.XPATH, "//td[normalize-space()='baseten_ui']")))
    saved = airflow_cluster.api.get("/api/v2/connections/baseten_ui")
    assert saved["conn_type"] == "baseten"
    assert saved["host"] == "http://127.0.0.1"
    assert saved["port"] == emulator.port
    assert saved["password"] != system_api_key  # the REST API masks it
    extra = json.loads(saved["extra"])
    assert extra["timeout"] == 30
    assert extra["max_retries"] == 2

    before = len(emulator.journal.entries())
    row = "//tr[.//td[normalize-space()='baseten_ui']]"
    click(f"{row}//button[@aria-label='Test Connection']")
    toast = wait.until(ec.visibility_of_element_located((By.XPATH, "//*[contains(text(), 'Connected to Baseten')]")))
    browser.save_screenshot(str(ARTIFACTS / "connection-test.png"))
    phase("tested")
    assert "developer@example.com" in toast.text
    tested = [e for e in emulator.journal.entries()[before:] if e.host == "api.baseten.co"]
    assert tested, "the Test button's call never reached the emulator"
    assert tested[0].status == 200
    assert Path(ARTIFACTS / "connection-test.png").stat().st_size > 10_000
