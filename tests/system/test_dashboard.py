"""The site dashboard end to end in a real browser: headless Chromium (Debian's chromium and
chromedriver, driven by Selenium) against a running `cad serve --watch` on loopback (SRS-SVC-017).

The main pages are also saved as PNG under reports/dashboard/ for a person to look at.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from cad_tools.browser import chromium, save_page, sign_in
from cad_tools.orthanc import free_port
from cad_tools.phantom.generate import exam_files_of

CAD = [sys.executable, "-m", "cad.cli"]
TOKEN = "dashboard-test-token-not-a-secret"
USER = "QA Jane Doe"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "reports" / "dashboard"


def _audit(state: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(state / "cad-service.sqlite") as db:
        return [json.loads(r[0]) for r in db.execute("SELECT record FROM audit ORDER BY seq")]


@pytest.fixture
def service(phantom_dir: Path, tmp_path: Path, until: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    """`cad serve --watch` with one good and one unreadable study, both finished."""
    inbox = tmp_path / "inbox"
    good, broken = inbox / "good", inbox / "broken"
    good.mkdir(parents=True)
    broken.mkdir()
    for path in exam_files_of(phantom_dir)[0]:
        shutil.copy(path, good / path.name)
    for path in exam_files_of(phantom_dir)[1]:  # every image cut to a third: nothing can be analysed
        data = path.read_bytes()
        (broken / path.name).write_bytes(data[: len(data) // 3])
    (tmp_path / "token").write_text(TOKEN + "\n")
    port, state = free_port(), tmp_path / "state"
    process = subprocess.Popen(
        [*CAD, "serve", "--state", str(state), "--watch", str(inbox), "--quiet-seconds", "0.5", "--poll-seconds", "0.5",
         "--api", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    try:
        until(lambda: requests.get(f"{base}/studies", headers=auth, timeout=5).json()["counts"]["failed"] == 1
               and requests.get(f"{base}/studies", headers=auth, timeout=5).json()["counts"]["done"] == 1)
        until(lambda: any(a["kind"] == "study-failed"
                           for a in requests.get(f"{base}/alerts", headers=auth, timeout=5).json()["alerts"]))
        yield {"base": base, "auth": auth, "state": state, "good": good}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert TOKEN not in stderr  # the token is never logged


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def _follow(driver: WebDriver, element: Any, path: str) -> None:
    """Click a link and wait until the browser is on its page (never act on the page before)."""
    element.click()
    WebDriverWait(driver, 10).until(lambda d: d.current_url.split("#")[0].endswith(path))


def _shot(driver: WebDriver, name: str) -> None:
    save_page(driver, SCREENSHOTS / f"{name}.png")


@pytest.mark.slow
@pytest.mark.req("SRS-SVC-017", "SRS-LNK-005")
def test_dashboard_in_a_real_browser(service: dict[str, Any], browser: WebDriver, until: Callable[..., Any]) -> None:
    base, state = service["base"], service["state"]

    # without a session: every page sends the browser to sign in, and serves no data
    for path in ("/ui/", "/ui/studies", "/ui/alerts", "/ui/monitoring", "/ui/jobs/1", "/ui/jobs/1/overlays/x.png"):
        response = requests.get(base + path, allow_redirects=False, timeout=5)
        assert response.status_code == 303 and response.headers["location"] == "/ui/login", path
        assert "2.25." not in response.text
    assert requests.post(f"{base}/ui/jobs/2/requeue", allow_redirects=False, timeout=5).status_code == 303

    # a wrong token is refused in the browser
    sign_in(browser, base, USER, "not-the-token-at-all")
    assert "The token is wrong" in browser.find_element(By.CSS_SELECTOR, "p.error").text
    assert browser.current_url.endswith("/ui/login")
    _shot(browser, "0-sign-in")
    browser.get_log("browser")  # drains the log: the refused sign-in's 401 is expected there

    sign_in(browser, base, USER, TOKEN)
    assert browser.find_element(By.CSS_SELECTOR, "#readiness .big").text == "Ready"
    assert "Chain intact" in browser.find_element(By.ID, "audit").text
    about = requests.get(f"{base}/about", headers=service["auth"], timeout=5).json()
    assert about["model_sha256"][:16] in browser.find_element(By.ID, "model").text
    cookie = browser.get_cookie("cad_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    _shot(browser, "1-overview")

    # the processed study appears with its CAD marks, and its overlays load
    jobs = requests.get(f"{base}/studies", headers=service["auth"], timeout=5).json()["jobs"]
    done = next(j for j in jobs if j["state"] == "done")
    failed = next(j for j in jobs if j["state"] == "failed")
    findings = json.loads((Path(done["outputs"]["folder"]) / "findings.json").read_text())
    threshold = findings["operating_point"]["threshold"]
    marks = sum(f["score"] >= threshold for f in findings["findings"])
    _follow(browser, browser.find_element(By.LINK_TEXT, "Studies"), "/ui/studies")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{done['job_id']}']")
    assert "done" in row.text and str(marks) in row.find_elements(By.TAG_NAME, "td")[5].text
    assert "could be analysed" in browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{failed['job_id']}']").text
    _shot(browser, "2-studies")
    _follow(browser, row.find_element(By.LINK_TEXT, str(done["job_id"])), f"/ui/jobs/{done['job_id']}")
    assert browser.find_element(By.ID, "mark-count").text == str(marks)
    # each mark's location, as findings.json gives it (SRS-LNK-005)
    assert browser.find_element(By.ID, "findings").text.count("mm from the nipple") == marks
    images = browser.find_elements(By.CSS_SELECTOR, "#overlays img")
    assert len(images) == 4
    until(lambda: all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) > 0
                       for i in images), 20)
    _shot(browser, "3-study")

    # an alert is acknowledged with a note, audited as the signed-in person
    _follow(browser, browser.find_element(By.LINK_TEXT, "Alerts"), "/ui/alerts")
    alert_row = browser.find_element(By.CSS_SELECTOR, "tr[data-kind='study-failed']")
    alert_id = int(alert_row.get_attribute("data-alert") or 0)
    alert_row.find_element(By.NAME, "note").send_keys("truncated transfer from the modality; resent")
    alert_row.find_element(By.TAG_NAME, "button").click()
    assert f"alert {alert_id} acknowledged" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    listed = {a["id"]: a for a in requests.get(f"{base}/alerts", headers=service["auth"], timeout=5).json()["alerts"]}
    assert listed[alert_id]["state"] == "acknowledged" and listed[alert_id]["acknowledged_by"] == USER
    assert any(r["event"] == "alert_acknowledged" and r["by"] == USER and r["alert_id"] == alert_id
               for r in _audit(state))
    _shot(browser, "4-alerts")

    # a form without its session's CSRF token is refused, even with the session cookie
    forged = requests.post(f"{base}/ui/jobs/{failed['job_id']}/requeue", cookies={"cad_session": cookie["value"]},
                           data={"csrf": "forged"}, allow_redirects=False, timeout=5)
    assert forged.status_code == 403
    assert not any(r["event"] == "requeued" for r in _audit(state))

    # the failed study is requeued from its page, audited with the person's name
    browser.get(f"{base}/ui/jobs/{failed['job_id']}")
    assert "could be analysed" in browser.find_element(By.ID, "reason").text
    _shot(browser, "5-failed-study")
    browser.find_element(By.ID, "requeue").click()
    assert "requeued" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    assert any(r["event"] == "requeued" and r["job_id"] == failed["job_id"] and r["by"] == f"dashboard: {USER}"
               for r in _audit(state))

    _follow(browser, browser.find_element(By.LINK_TEXT, "Monitoring"), "/ui/monitoring")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart") and browser.find_element(By.ID, "performance")
    _shot(browser, "6-monitoring")

    # nothing was loaded from elsewhere, and the browser saw no errors
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(str(name).startswith(base) for name in resources)
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    # signing out ends the session: the cookie no longer opens a page
    browser.find_element(By.CSS_SELECTOR, "form.who button").click()
    WebDriverWait(browser, 10).until(lambda driver: driver.current_url.endswith("/ui/login"))
    assert browser.find_element(By.ID, "sign-in")
    assert requests.get(f"{base}/ui/", cookies={"cad_session": cookie["value"]}, allow_redirects=False,
                        timeout=5).status_code == 303
