"""The introspection page (/ui) and the API documentation page (/) in a real browser: Debian's headless
Chromium driven by Selenium, against the session's real ``bentoml serve``.

Each state is saved as a screenshot (``$SCREENSHOTS``, default ``reports/screenshots/``): look at them."""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from tests.helpers import png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS", ROOT / "reports" / "screenshots"))


def requested_urls(driver) -> list[str]:
    """Every URL the page asked the network for since the last call (Chrome's DevTools log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def off_host(urls: list[str], server) -> list[str]:
    host = urlparse(server.url).netloc
    return [u for u in urls if urlparse(u).scheme not in ("data", "blob") and urlparse(u).netloc != host]


def open_page(driver, server, path: str = "/ui") -> None:
    driver.get_log("performance")  # forget earlier pages
    driver.get_log("browser")
    driver.get(server.url + path)
    if path.startswith("/ui"):
        wait_for(driver, "document.body.dataset.ready === 'true'")


def wait_for(driver, condition: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(f"return Boolean({condition})"):
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {condition}")


def answers(driver) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.answers || 0)"))


def settled(driver, before: int) -> None:
    """Wait until the page shows the answer to its latest input: a new answer since ``before`` (what
    :func:`answers` said before the action), and nothing scheduled or in flight."""
    wait_for(driver, f"Number(document.body.dataset.answers || 0) > {before} && document.body.dataset.state === 'idle'")


def shown(driver) -> dict:
    """What the page shows: label, per-layer sparsity (exact, from data attributes), verdict, fired units."""
    return driver.execute_script(
        """
        const result = document.getElementById('result');
        const layers = {}, fired = {};
        for (const row of document.querySelectorAll('#layers .layer')) {
          layers[row.dataset.layer] = Number(row.dataset.value);
        }
        for (const row of document.querySelectorAll('#units .units-layer')) {
          fired[row.dataset.layer] = Number(row.dataset.fired);
        }
        return {
          visible: !result.hidden,
          label: Number(result.dataset.label),
          model: result.dataset.model,
          layers, fired,
          atypical: document.getElementById('typicality').dataset.atypical === 'true',
          verdict: document.getElementById('verdict').textContent,
          error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent,
        };
        """
    )


def api_image(server, model: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/models/{model}/predict_image?detail=units",
        files={"image": ("input.png", data, "image/png")},
        timeout=60,
    )


def assert_page_equals_api(page: dict, answer: dict) -> None:
    assert page["visible"] and page["label"] == answer["label"]
    assert page["layers"] == answer["sparsity"]["layers"]  # the same numbers, not merely close
    assert page["atypical"] is answer["typicality"]["atypical"]
    expected = "Unlike the calibration data" if answer["typicality"]["atypical"] else "Like the calibration data"
    assert page["verdict"].startswith(expected)
    assert page["fired"] == {layer: sum(s > 0 for s in shares) for layer, shares in answer["units"].items()}


def draw(driver, points: list[tuple[int, int]]) -> None:
    """One stroke through ``points`` (offsets from the pad's centre, in CSS pixels), with pointer events."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    chain = ActionChains(driver, duration=20).move_to_element_with_offset(pad, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        for _ in range(4):  # several moves per segment, as a hand makes
            chain.move_by_offset(round((x1 - x0) / 4), round((y1 - y0) / 4))
    chain.release().perform()


def fill_fields(driver, values: list[float]) -> None:
    """Type one value into each field of the tabular form, and wait for the page's answer to them."""
    from selenium.webdriver.common.by import By

    before = answers(driver)
    for i, value in enumerate(values):
        field = driver.find_element(By.ID, f"feature-{i}")
        field.clear()
        field.send_keys(str(value))
    settled(driver, before)


def pad_png(driver) -> bytes:
    data_url = driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(data_url.split(",", 1)[1])


def test_a_drawn_stroke_gives_on_the_page_what_the_api_answers_for_the_same_pixels(browser, server):
    open_page(browser, server)
    assert browser.execute_script("return document.getElementById('model-select').value") == "mnist_cnn"
    before = answers(browser)
    draw(browser, [(-10, -90), (0, -30), (5, 30), (10, 90)])  # a one
    settled(browser, before)
    page = shown(browser)
    answer = api_image(server, "mnist_cnn", pad_png(browser))  # the pixels read back from the canvas
    assert answer.status_code == 200, answer.text
    assert_page_equals_api(page, answer.json()["predictions"][0])
    browser.save_screenshot(str(SCREENSHOTS / "ui-drawn.png"))
    before = answers(browser)
    draw(browser, [(-80, -70), (70, -70), (10, 20), (-30, 95)])  # and a second stroke: a seven
    settled(browser, before)
    answer = api_image(server, "mnist_cnn", pad_png(browser))
    assert_page_equals_api(shown(browser), answer.json()["predictions"][0])
    assert not off_host(requested_urls(browser), server)


def test_uploads_a_digit_and_shows_the_apis_refusals_of_a_non_image_and_an_oversized_picture(
    browser, server, test_images, tmp_path
):
    from PIL import Image
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    digit = tmp_path / "digit.png"
    digit.write_bytes(png_bytes(test_images[0][0]))
    before = answers(browser)
    browser.find_element(By.ID, "upload").send_keys(str(digit))
    settled(browser, before)
    answer = api_image(server, "mnist_cnn", digit.read_bytes())
    assert_page_equals_api(shown(browser), answer.json()["predictions"][0])
    browser.save_screenshot(str(SCREENSHOTS / "ui-uploaded-digit.png"))

    text = tmp_path / "notes.txt"
    text.write_text("not a picture at all\n")
    before = answers(browser)
    browser.find_element(By.ID, "upload").send_keys(str(text))
    settled(browser, before)
    refused = api_image(server, "mnist_cnn", text.read_bytes())
    assert refused.status_code == 400
    page = shown(browser)
    assert page["error"] == refused.json()["error"] and not page["visible"]
    browser.save_screenshot(str(SCREENSHOTS / "ui-refused-non-image.png"))

    huge = tmp_path / "huge.png"
    Image.new("L", (6000, 6000)).save(huge)  # 36 million pixels, a small file
    before = answers(browser)
    browser.find_element(By.ID, "upload").send_keys(str(huge))
    settled(browser, before)
    refused = api_image(server, "mnist_cnn", huge.read_bytes())
    assert refused.status_code == 400 and "pixels" in refused.json()["error"]
    assert shown(browser)["error"] == refused.json()["error"]


def test_an_example_is_scored_by_the_api_and_the_units_and_dead_units_are_drawn(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    examples = httpx.get(f"{server.url}/models/mnist_cnn/examples", timeout=10).json()
    buttons = browser.find_elements(By.CSS_SELECTOR, "#examples button")
    assert len(buttons) == len(examples["inputs"]) >= 2
    before = answers(browser)
    buttons[1].click()
    settled(browser, before)
    answer = httpx.post(
        f"{server.url}/models/mnist_cnn/predict?detail=units", json={"inputs": examples["inputs"][1:2]}, timeout=30
    ).json()["predictions"][0]
    assert_page_equals_api(shown(browser), answer)
    card = httpx.get(f"{server.url}/models/mnist_cnn", timeout=10).json()
    for layer, shares in answer["units"].items():
        cells = browser.find_elements(By.CSS_SELECTOR, f'#units .units-layer[data-layer="{layer}"] .unit')
        assert len(cells) == len(shares) == len(card["unit_firing"][layer])
        dead = [i for i, c in enumerate(cells) if "dead" in c.get_attribute("class")]
        assert dead == [i for i, rate in enumerate(card["unit_firing"][layer]) if rate == 0]
    browser.save_screenshot(str(SCREENSHOTS / "ui-example.png"))


def test_a_channels_first_onnx_model_shows_its_examples_and_scores_drawings(browser, server):
    """``small_onnx`` takes (1, 12, 12) inputs, as PyTorch exports take them: its examples are drawn as
    pictures and a drawing on the pad goes to the API as one channels-first input."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(browser, server)
    Select(browser.find_element(By.ID, "model-select")).select_by_value("small_onnx")
    wait_for(browser, "document.getElementById('model-card').textContent.includes('small_onnx')")
    wait_for(browser, "document.querySelectorAll('#examples button').length >= 2")
    examples = httpx.get(f"{server.url}/models/small_onnx/examples", timeout=10).json()
    before = answers(browser)
    browser.find_elements(By.CSS_SELECTOR, "#examples button")[1].click()
    settled(browser, before)
    answer = httpx.post(
        f"{server.url}/models/small_onnx/predict?detail=units", json={"inputs": examples["inputs"][1:2]}, timeout=30
    ).json()["predictions"][0]
    assert_page_equals_api(shown(browser), answer)
    before = answers(browser)
    draw(browser, [(-60, -60), (0, 0), (60, 60)])
    settled(browser, before)
    page = shown(browser)
    assert page["error"] is None and page["model"] == "small_onnx"
    assert set(page["layers"]) == {"relu1", "relu6", "max0"}  # the page orders its rows itself
    browser.save_screenshot(str(SCREENSHOTS / "ui-onnx-channels-first.png"))


def test_a_colour_channels_first_model_is_drawn_in_colour_and_sent_as_rgb_planes(browser, server):
    """``colour_onnx`` takes (3, 12, 12) inputs: an example is drawn from its three planes, and the pad goes to
    the API as red, green and blue planes, in that order."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(browser, server)
    Select(browser.find_element(By.ID, "model-select")).select_by_value("colour_onnx")
    wait_for(browser, "document.getElementById('model-card').textContent.includes('colour_onnx')")
    wait_for(browser, "document.querySelectorAll('#examples button').length >= 2")
    example = np.array(httpx.get(f"{server.url}/models/colour_onnx/examples", timeout=10).json()["inputs"][1])
    before = answers(browser)
    browser.find_elements(By.CSS_SELECTOR, "#examples button")[1].click()
    settled(browser, before)
    # the example on the pad, one 12x12 cell per input pixel: the colour of each cell's centre is its planes
    cells = browser.execute_script(
        """
        const pad = document.getElementById('pad'), cell = pad.width / 12, rgb = [];
        const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
        for (let y = 0; y < 12; y++) for (let x = 0; x < 12; x++) {
          const i = 4 * (Math.floor((y + 0.5) * cell) * pad.width + Math.floor((x + 0.5) * cell));
          rgb.push([data[i], data[i + 1], data[i + 2]]);
        }
        return rgb;
        """
    )
    np.testing.assert_array_equal(np.array(cells).reshape(12, 12, 3), np.floor(255 * example.transpose(1, 2, 0) + 0.5))
    # red on the left half of the pad, blue on the right: the planes the page sends
    before = answers(browser)
    planes = np.array(
        browser.execute_script(
            """
            const pad = document.getElementById('pad'), c = pad.getContext('2d');
            c.fillStyle = '#f00'; c.fillRect(0, 0, pad.width / 2, pad.height);
            c.fillStyle = '#00f'; c.fillRect(pad.width / 2, 0, pad.width / 2, pad.height);
            predictPad();
            return padInput();
            """
        )
    )
    settled(browser, before)
    assert planes.shape == (3, 12, 12)
    red, green, blue = planes
    assert (red[:, :5] == 1).all() and (red[:, 7:] == 0).all() and (blue[:, :5] == 0).all() and (blue[:, 7:] == 1).all()
    assert (green == 0).all()
    answer = httpx.post(
        f"{server.url}/models/colour_onnx/predict?detail=units", json={"inputs": [planes.tolist()]}, timeout=30
    ).json()["predictions"][0]
    assert_page_equals_api(shown(browser), answer)
    browser.save_screenshot(str(SCREENSHOTS / "ui-onnx-colour.png"))


def test_the_tabular_form_and_switching_models(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(browser, server)
    served = {m["name"]: m for m in httpx.get(f"{server.url}/models", timeout=10).json()["models"]}
    select = Select(browser.find_element(By.ID, "model-select"))
    assert sorted(o.get_attribute("value") for o in select.options) == sorted(served)
    for name in served:  # every model's card on the page is its /models entry
        select.select_by_value(name)
        wait_for(browser, f"document.getElementById('model-card').textContent.includes('{served[name]['tag']}')")
    select.select_by_value("iris_l1")
    wait_for(browser, "document.querySelectorAll('#fields input').length === 4")
    values = [6.9, 3.1, 5.4, 2.1]
    fill_fields(browser, values)
    answer = httpx.post(f"{server.url}/models/iris_l1/predict?detail=units", json={"inputs": [values]}, timeout=10)
    page, expected = shown(browser), answer.json()["predictions"][0]
    assert page["model"] == "iris_l1" and page["label"] == expected["label"]
    assert page["layers"] == expected["sparsity"]["layers"] and page["atypical"] is expected["typicality"]["atypical"]
    labels = browser.find_elements(By.CSS_SELECTOR, "#fields label")
    assert [label.text.splitlines()[0].strip() for label in labels] == served["iris_l1"]["feature_names"]
    assert "calibration:" in labels[0].text  # the range the calibration set held
    browser.save_screenshot(str(SCREENSHOTS / "ui-tabular.png"))


def test_phone_width_and_keyboard(browser, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.set_window_size(375, 1400)
    try:
        open_page(browser, server)
        before = answers(browser)
        draw(browser, [(-10, -60), (0, 0), (5, 60)])
        settled(browser, before)
        assert shown(browser)["visible"]
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a 375 px screen"
        browser.save_screenshot(str(SCREENSHOTS / "ui-phone.png"))
    finally:
        browser.set_window_size(1280, 1500)
    open_page(browser, server)
    reached = []
    for _ in range(24):  # the keyboard alone reaches every control of the image input, then the model
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.append(browser.execute_script("return document.activeElement.id || document.activeElement.tagName"))
    assert {"model-select", "clear", "upload"} <= set(reached), reached
    assert "BUTTON" in reached  # an example


def test_the_drawing_pad_is_above_the_fold_on_a_1280_by_800_screen(browser, server):
    browser.set_window_size(1280, 800)
    try:
        open_page(browser, server)
        height = browser.execute_script("return window.innerHeight")
        pad = browser.execute_script("return document.getElementById('pad').getBoundingClientRect().toJSON()")
        assert pad["width"] >= 200 and pad["top"] >= 0 and pad["bottom"] <= height, (pad, height)
        browser.save_screenshot(str(SCREENSHOTS / "ui-1280x800.png"))
    finally:
        browser.set_window_size(1280, 1500)


def test_no_page_of_the_service_requests_anything_off_the_host(browser, server):
    for path in ("/", "/ui"):
        open_page(browser, server, path)
        if path == "/":
            wait_for(browser, "document.querySelector('.swagger-ui .info') !== null")  # Swagger UI rendered
            browser.save_screenshot(str(SCREENSHOTS / "api-docs.png"))
        time.sleep(1.0)
        urls = requested_urls(browser)
        assert urls and not off_host(urls, server), off_host(urls, server)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    html = httpx.get(server.url + "/", timeout=10).text
    assert "googletagmanager" not in html and 'href="/ui"' in html


def test_a_wrong_detail_value_is_refused_naming_the_field(server, test_images):
    r = httpx.post(
        f"{server.url}/models/mnist_cnn/predict?detail=everything",
        json={"inputs": np.asarray(test_images[0][:1]).tolist()},
        timeout=30,
    )
    assert r.status_code == 400
    assert r.json()["detail"][0]["loc"] == ["detail"] and "must be one of: units" in r.json()["error"]
