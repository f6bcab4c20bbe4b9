# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The report's charts as a real browser draws them (headless Chromium from Debian).

The HTML report is read by people in a browser, so a chart that parses as SVG but draws
nothing (a bad viewBox, coordinates outside it) must fail here: the screenshot has to hold
the curve's colour, and the same page without its polylines must not.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from ansible_collections.unbroken.training.plugins.filter import training_report as report

CURVE_RGB = (0x1F, 0x6F, 0xEB)  # the polyline stroke of training_svg_chart


def _browser() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium here: tests/harness/ensure_host.sh installs Debian's chromium")


def _screenshot(html: str, tmp_path: Path, name: str) -> Path:
    page = tmp_path / f"{name}.html"
    page.write_text(html)
    png = tmp_path / f"{name}.png"
    subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",  # as root in CI
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=700,560",
            f"--screenshot={png}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return png


def _rgba_rows(png: Path) -> list[bytes]:
    """Decode an 8-bit RGBA or RGB, non-interlaced PNG (what Chromium writes)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 4
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            channels = 4 if colour == 6 else 3
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        rows.append(
            bytes(line) if channels == 3 else bytes(line[j] for j in range(stride) if j % 4 != 3)
        )
        previous = line
    return rows


def _curve_pixels(png: Path) -> int:
    count = 0
    for row in _rgba_rows(png):
        for i in range(0, len(row), 3):
            if all(abs(row[i + k] - CURVE_RGB[k]) <= 40 for k in range(3)):
                count += 1
    return count


def test_the_browser_draws_the_report_curves(tmp_path: Path) -> None:
    points = [
        {"step": step, "time": 1000.0 + step, "loss": 1.0 / (1 + step / 50), "lr": 0.01}
        for step in range(0, 600, 10)
    ]
    chart = report.training_svg_chart({"points": points}, y="loss", title="loss by step")
    page = f"<!doctype html><html><body>{chart}</body></html>"
    drawn = _curve_pixels(_screenshot(page, tmp_path, "report"))
    without = page.replace("<polyline", "<g data-removed").replace('points="', 'data-points="')
    blank = _curve_pixels(_screenshot(without, tmp_path, "without-curves"))
    print(f"curve-coloured pixels: {drawn} drawn, {blank} without the polylines")
    assert blank < 20, blank  # nothing else on the page has the curve's colour
    assert drawn > 300, drawn  # a 500-pixel-wide line across the chart
