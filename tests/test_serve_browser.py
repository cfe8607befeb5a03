"""The page in a real browser: headless Chromium (Debian's chromium and chromedriver) driven by selenium
uploads a rendered sign and a real-looking street photo, waits for the answers and compares the names it
shows with the API's for the same files. Screenshots go to pytest's tmp dir.

Without chromium or chromedriver the tests skip, except under CI (CI set), where .ci/run installs them and
their absence is a failure."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_serve import encoded, rendered_sign, train_tiny

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# As root, in a container, with no network: no sandbox, no /dev/shm, and nothing that phones home (Chromium
# otherwise stalls on the refused connections).
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1000,860"]


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install chromium chromium-driver; .ci/run does this)"
    for module in ("selenium", "uvicorn", "fastapi", "httpx2"):
        try:
            __import__(module)
        except ImportError:
            return f"python package {module} is missing (pip install -e '.[dev]')"
    return None


if (reason := _missing()) is not None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser test must run in CI: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

import httpx2  # noqa: E402
import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from signlab.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free loopback port, in a thread of this process."""
    model = train_tiny(tmp_path_factory.mktemp("serve-browser"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(model), log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def street_photo(path: Path, class_id: int = 13, seed: int = 7) -> Path:
    """A real-looking photo: signlab's drawing of the sign on a post in a procedural street scene (sky, trees,
    buildings or road), a little soft and grainy, saved as a camera would save it."""
    from PIL import ImageDraw, ImageFilter

    from signlab.synth.pictograms import draw_sign
    from signlab.synth.scene import draw_post, post_spec, texture

    g = np.random.default_rng(seed)
    scene = texture(g, 640, 480)
    side, cx, cy = 170, 330, 190
    draw_post(ImageDraw.Draw(scene), post_spec(g), cx, cy, side, 480)
    sign = draw_sign(class_id, side)
    scene.paste(sign, (cx - side // 2, cy - side // 2), sign)
    grain = g.normal(0, 4, (480, 640, 3))
    photo = np.clip(np.asarray(scene.filter(ImageFilter.GaussianBlur(0.8)), np.float32) + grain, 0, 255)
    Image.fromarray(photo.astype(np.uint8)).save(path, "JPEG", quality=88)
    return path


# What a drag and drop from the desktop delivers: a drop event whose DataTransfer holds the file.
DROP = """
const [name, b64] = arguments;
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, {type: "image/png"}));
document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true,
                                                                    cancelable: true}));
"""


def upload(driver, server: str, path: Path, how: str = "pick") -> list[str]:
    """Load the page, pick `path` in its file picker or drop it on the page, wait for the answer; the names
    it lists."""
    driver.get(server + "/")
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "limits").text)  # health answered
    if how == "drop":
        driver.execute_script(DROP, path.name, base64.b64encode(path.read_bytes()).decode())
    else:
        driver.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                    in ("done", "error"))
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), error.text
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#top .name")]


def api_names(server: str, path: Path) -> list[str]:
    with open(path, "rb") as fh:
        r = httpx2.post(server + "/api/classify", files={"file": (path.name, fh)}, timeout=20)
    r.raise_for_status()
    return [t["name"] for t in r.json()["top"]]


def pictograms_loaded(driver) -> bool:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#top img'))"
        ".every(i => i.complete && i.naturalWidth === 96)")


@pytest.mark.parametrize("kind", ["rendered-sign", "street-photo", "dropped-sign"])
def test_the_page_shows_the_apis_top_five_with_pictograms(server, browser, tmp_path, kind):
    if kind == "street-photo":
        path = street_photo(tmp_path / "street.jpg")
    else:
        path = tmp_path / "sign.png"
        path.write_bytes(encoded(rendered_sign(14 if kind == "rendered-sign" else 1)))
    shown = upload(browser, server, path, "drop" if kind == "dropped-sign" else "pick")
    assert len(shown) == 5 and shown == api_names(server, path)
    assert browser.find_element(By.ID, "status").text.startswith(f"Best guess: {shown[0]}")
    WebDriverWait(browser, 10).until(pictograms_loaded)
    preview = browser.execute_script("const i = document.getElementById('preview'); return i.naturalWidth;")
    assert preview == Image.open(path).width  # the photo sent is shown beside the answer
    browser.save_screenshot(str(tmp_path / f"{kind}.png"))
    assert (tmp_path / f"{kind}.png").stat().st_size > 10_000


def test_the_page_shows_the_servers_refusal(server, browser, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a photo\n")
    browser.get(server + "/")
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "limits").text)
    browser.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                     == "error")
    assert "not an image" in browser.find_element(By.ID, "error").text
    browser.save_screenshot(str(tmp_path / "refused.png"))
