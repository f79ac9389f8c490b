"""Headless Chromium for looking at the dashboard: Debian's chromium and chromedriver driven by
Selenium (mammo-cad-dev). Used by the dashboard's browser tests and to save pages as PNG."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WIDTH = 1400


@contextmanager
def chromium(width: int = WIDTH, height: int = 1100) -> Iterator[WebDriver]:
    """A headless Chromium session (its console log kept for checks); quits on exit."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError("headless Chromium needs Debian's chromium and chromium-driver (make system-deps)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: WebDriver, base: str, user: str, token: str) -> None:
    """Open the dashboard and sign in through its form."""
    driver.get(f"{base}/ui/")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()


def save_page(driver: WebDriver, path: Path) -> Path:
    """The whole current page as a PNG (the window grown to the page's height, up to 4000 px)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.body.scrollHeight"))
    driver.set_window_size(WIDTH, max(800, min(height + 40, 4000)))
    driver.save_screenshot(str(path))
    return path
