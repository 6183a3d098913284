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
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # network requests
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
    # the caveat that fits a match; "not in this archive" belongs to no-match reports only
    assert "compare the two images by eye" in body and "not in this archive" not in body
    assert "Checked at (UTC)" in body and "Input sha256" in body
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
    # grouped by archived photo, oldest first; every thumbnail says which side it is
    dates = [el.text[:10] for el in browser.find_elements(  # type: ignore[attr-defined]
        "css selector", "#groups li a")]
    assert dates == sorted(dates)
    captions = [el.text for el in browser.find_elements(  # type: ignore[attr-defined]
        "css selector", ".thumbs figcaption")]
    assert sum(c.startswith("archived") for c in captions) == 3
    assert sum(c.startswith("submitted") for c in captions) == 3
    assert "Checked against" in body


def _rect(driver: object, css: str) -> dict[str, float]:
    return driver.execute_script(  # type: ignore[attr-defined,no-any-return]
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};", css)


def _iou(a: dict[str, float], b: dict[str, float]) -> float:
    ix = max(0.0, min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]))
    iy = max(0.0, min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]))
    area = lambda r: (r["x1"] - r["x0"]) * (r["y1"] - r["y0"])  # noqa: E731
    return ix * iy / (area(a) + area(b) - ix * iy)


def test_report_sizes_outline_and_neutral_no_match(browser: object, tmp_path: Path) -> None:
    """What a person sees: the archived photo as large as the submitted one, the outline on
    the photo inside a screenshot (and on the part of the archived photo a crop used), and
    a no-match in a neutral colour."""
    import random
    import sys

    from PIL import Image

    sys.path.insert(0, str(ROOT / "bench"))
    import edits as E

    photo = ROOT / "fixtures/examples/viral_space_repost.jpg"
    archive = tmp_path / "a.sqlite"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,date,event\n{photo},2012-09-25,Space\n", encoding="utf-8")
    assert runner.invoke(app, ["archive", "add", str(manifest), "--archive",
                               str(archive)]).exit_code == 0
    original = Image.open(photo).convert("RGB")
    shot = E.screenshot(original, random.Random(4))
    x0, y0, x1, y1 = E.params(shot)[-1][1]["photo_box"]
    truth = (x0 / shot.width, y0 / shot.height, x1 / shot.width, y1 / shot.height)
    w, h = original.size
    crop = original.crop((int(w * 0.35), int(h * 0.3), int(w * 0.95), int(h * 0.9)))
    for name, pic in (("shot", shot), ("crop", crop)):
        src = tmp_path / f"{name}.jpg"
        pic.save(src, quality=85)
        report = tmp_path / f"{name}.html"
        res = runner.invoke(app, ["check", str(src), "--archive", str(archive), "--format",
                                  "html", "--out", str(report)])
        assert res.exit_code == 0, res.output
        browser.get(report.as_uri())  # type: ignore[attr-defined]
        assert all(x > 0 for x in _images_loaded(browser))
        q = _rect(browser, "#query-img-1")
        r = _rect(browser, "#ref-img-1")
        assert abs((q["x1"] - q["x0"]) - (r["x1"] - r["x0"])) <= 2, (q, r)  # same size
        if name == "shot":
            box = _rect(browser, "#match-1 .frame .region")
            expected = {"x0": q["x0"] + truth[0] * (q["x1"] - q["x0"]),
                        "y0": q["y0"] + truth[1] * (q["y1"] - q["y0"]),
                        "x1": q["x0"] + truth[2] * (q["x1"] - q["x0"]),
                        "y1": q["y0"] + truth[3] * (q["y1"] - q["y0"])}
            assert _iou(box, expected) >= 0.8, (box, expected)
            assert box["x0"] >= q["x0"] - 1 and box["x1"] <= q["x1"] + 1
        else:
            used = _rect(browser, "#match-1 .ref-region")
            expected = {"x0": r["x0"] + 0.35 * (r["x1"] - r["x0"]),
                        "y0": r["y0"] + 0.3 * (r["y1"] - r["y0"]),
                        "x1": r["x0"] + 0.95 * (r["x1"] - r["x0"]),
                        "y1": r["y0"] + 0.9 * (r["y1"] - r["y0"])}
            assert _iou(used, expected) >= 0.8, (used, expected)
        browser.save_screenshot(str(tmp_path / f"{name}.png"))  # type: ignore[attr-defined]
    report = tmp_path / "none.html"
    res = runner.invoke(app, ["check", str(ROOT / "fixtures/not_archived/coffee.jpg"),
                              "--archive", str(archive), "--format", "html", "--out",
                              str(report)])
    assert res.exit_code == 0
    browser.get(report.as_uri())  # type: ignore[attr-defined]
    png = tmp_path / "none.png"
    browser.save_screenshot(str(png))  # type: ignore[attr-defined]
    v = _rect(browser, "#verdict")
    ratio = browser.execute_script("return window.devicePixelRatio")  # type: ignore
    pixels = Image.open(png).convert("RGB")
    for fx in (0.0, 0.5):  # the border strip and the middle of the box, as rendered
        px = pixels.getpixel((int((v["x0"] + 3 + fx * (v["x1"] - v["x0"] - 6)) * ratio),
                              int((v["y0"] + 3) * ratio)))
        assert max(px) - min(px) <= 40, px  # grey-blue, not green
        assert not (px[1] > px[0] + 25 and px[1] > px[2] + 10), px


def _requested(driver: object) -> list[str]:
    """URLs the page asked the network stack for (Chrome's performance log)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[attr-defined]
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def test_local_match_evidence_keypoints_flicker_offline(browser: object, tmp_path: Path
                                                        ) -> None:
    """Issue 12, item 4: keypoints joined between the images, the submitted image aligned on
    the archived one flickering by CSS alone, and nothing fetched from anywhere."""
    import time

    from PIL import Image

    photo = ROOT / "fixtures/examples/viral_space_repost.jpg"
    archive = tmp_path / "a.sqlite"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,date,event\n{photo},2012-09-25,Space\n", encoding="utf-8")
    assert runner.invoke(app, ["archive", "add", str(manifest), "--archive",
                               str(archive)]).exit_code == 0
    im = Image.open(photo).convert("RGB")
    w, h = im.size
    query = tmp_path / "crop.jpg"
    im.crop((int(w * 0.2), int(h * 0.15), int(w * 0.8), int(h * 0.75))).rotate(
        6, resample=Image.Resampling.BICUBIC).save(query, quality=85)
    report = tmp_path / "r.html"
    res = runner.invoke(app, ["check", str(query), "--archive", str(archive), "--format",
                              "html", "--out", str(report)])
    assert res.exit_code == 0, res.output
    browser.get_log("performance")  # type: ignore[attr-defined]  # forget earlier pages
    browser.get(report.as_uri())  # type: ignore[attr-defined]
    assert all(x > 0 for x in _images_loaded(browser))
    lines = browser.find_elements("css selector", "#keypoints-1 line")  # type: ignore
    assert len(lines) >= 20
    # the SVG's two pictures decode (data URIs, as the CSP allows)
    sizes = browser.execute_async_script(  # type: ignore[attr-defined]
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.querySelectorAll('#keypoints-1 image')).map(el =>"
        " new Promise(ok => { const i = new Image(); i.onload = () => ok(i.naturalWidth);"
        " i.onerror = () => ok(0); i.src = el.getAttribute('href'); }))).then(done);")
    assert len(sizes) == 2 and all(s > 0 for s in sizes)
    over = "#flicker-1 img.over"
    state = browser.execute_script(  # type: ignore[attr-defined]
        "return document.querySelector(arguments[0]).getAnimations()"
        ".map(a => a.playState);", over)
    assert state == ["running"]
    seen = set()
    for _ in range(8):
        seen.add(browser.execute_script(  # type: ignore[attr-defined]
            "return getComputedStyle(document.querySelector(arguments[0])).opacity;", over))
        time.sleep(0.25)
    assert seen == {"0", "1"}, seen  # the aligned image shows and hides
    blend = browser.execute_script(  # type: ignore[attr-defined]
        "return getComputedStyle(document.querySelector('#blend-1 img.over')).opacity;")
    assert blend == "0.5"
    requested = _requested(browser)
    assert requested and all(u.startswith(("file:", "data:")) for u in requested), requested
    assert browser.execute_script(  # type: ignore[attr-defined]
        "return performance.getEntriesByType('resource').filter("
        "e => !e.name.startsWith('data:')).length;") == 0
    browser.save_screenshot(str(tmp_path / "evidence.png"))  # type: ignore[attr-defined]
