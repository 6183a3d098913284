"""The HTML report in a real browser: headless Chromium (Debian's chromium + chromium-driver,
installed by `bash setup.sh test`) renders it, and we assert on the rendered page."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imgverify.cli import app

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium/ChromeDriver not installed: run `bash setup.sh test` (installs the Debian "
           "packages chromium and chromium-driver)")
runner = CliRunner()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1100,1600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _images_loaded(driver: object) -> list[int]:
    return driver.execute_script(  # type: ignore[attr-defined,no-any-return]
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0);")


def test_report_renders_verdict_context_and_images(browser: object, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    res = runner.invoke(app, ["check", str(ROOT / "fixtures/examples/viral_rocket_repost.jpg"),
                              "--claimed-date", "2025-06-01", "--claimed-place", "Springfield",
                              "--format", "html", "--out", str(report)])
    assert res.exit_code == 0, res.output
    browser.get(report.as_uri())  # type: ignore[attr-defined]
    body = browser.find_element("tag name", "body").text  # type: ignore[attr-defined]
    verdict = browser.find_element("id", "verdict").text  # type: ignore[attr-defined]
    assert "LIKELY RECYCLED" in verdict
    assert "Launch of a SpaceX Falcon 9 rocket" in body
    assert "2015-02-11" in body and "2025-06-01" in body  # timeline with the claim on it
    assert "not in this archive" in body or "never that it is authentic" in body
    widths = _images_loaded(browser)
    assert len(widths) >= 2 and all(w > 0 for w in widths)
    for el_id in ("query-img-1", "ref-img-1"):
        el = browser.find_element("id", el_id)  # type: ignore[attr-defined]
        assert el.size["width"] > 50 and el.size["height"] > 50
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


HOSTILE = {
    "event": "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned=2'>Flood",
    "place": "\"'><svg onload=alert(1)> مدينة غزة (right-to-left) ",
    "caption": "A" * 10_000 + " <b>bold?</b>",
    "source": "Agency \"quoted\" & 'single' <i>",
    "source_url": "javascript:alert(document.cookie)",
    "credit": "‮reversed credit",
}


def test_hostile_archive_strings_render_inert(browser: object, tmp_path: Path) -> None:
    img = ROOT / "fixtures/examples/viral_space_repost.jpg"
    manifest = tmp_path / "hostile.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "date", *HOSTILE])
        w.writerow([str(img), "2012-09-25", *HOSTILE.values()])
    archive = tmp_path / "hostile.sqlite"
    res = runner.invoke(app, ["archive", "add", str(manifest), "--archive", str(archive)])
    # the javascript: source_url is refused at ingest: the row is reported, nothing else lost
    assert res.exit_code == 3 and "source_url" in res.output
    safe = dict(HOSTILE, source_url="https://example.org/a?b=<c>&d=\"e\"")
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "date", *safe])
        w.writerow([str(img), "2012-09-25", *safe.values()])
    res = runner.invoke(app, ["archive", "add", str(manifest), "--archive", str(archive)])
    assert res.exit_code == 0, res.output
    report = tmp_path / "hostile.html"
    res = runner.invoke(app, ["check", str(img), "--archive", str(archive), "--format", "html",
                              "--out", str(report)])
    assert res.exit_code == 0
    html = report.read_text(encoding="utf-8")
    assert "<script>" not in html and "onerror='" not in html and "<svg" not in html
    browser.get(report.as_uri())  # type: ignore[attr-defined]
    assert browser.execute_script("return window.__pwned === undefined")  # type: ignore
    body = browser.find_element("tag name", "body").text  # type: ignore[attr-defined]
    assert "<script>window.__pwned = 1</script>" in body  # shown as text, not run
    assert "مدينة غزة" in body
    links = browser.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.links).map(a => a.protocol);")
    assert all(p in ("http:", "https:") for p in links)
    widths = _images_loaded(browser)
    assert widths and all(w > 0 for w in widths)
    browser.save_screenshot(str(tmp_path / "hostile.png"))  # type: ignore[attr-defined]


def test_scan_summary_report(browser: object, tmp_path: Path) -> None:
    summary = tmp_path / "summary.html"
    out = tmp_path / "results.jsonl"
    folder = tmp_path / "downloads"
    folder.mkdir()
    for sub in ("examples", "not_archived"):
        for p in (ROOT / "fixtures" / sub).glob("*.jpg"):
            (folder / p.name).write_bytes(p.read_bytes())
    res = runner.invoke(app, ["scan", str(folder), "--out", str(out), "--report",
                              str(summary), "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    browser.get(summary.as_uri())  # type: ignore[attr-defined]
    body = browser.find_element("tag name", "body").text  # type: ignore[attr-defined]
    assert "5 checked" in body and "likely_recycled: 3" in body
    # recycled finds come first, each linking to its details
    links = browser.find_elements("css selector", "ol li a")  # type: ignore[attr-defined]
    assert len(links) == 3 and all(a.get_attribute("href").endswith(f"#find-{i}")
                                   for i, a in enumerate(links))
    widths = _images_loaded(browser)
    assert len(widths) == 6 and all(w > 0 for w in widths)
