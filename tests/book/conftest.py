"""Fixtures of the book checks: the built book, a local web server for it, a headless Chromium.

The book is built once if ``_build/html/index.html`` is missing (as ``make book`` builds it, with
``IMBALANCE_SMOKE=1``); otherwise the existing build is checked as it is.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from bookpages import BUILD_ARGS, HTML_ROOT, ROOT
from browser import Chromium, QuietHandler, Site, find_chromium

BUILD_TIMEOUT_S = 3600


def jupyter_book() -> str:
    """The jupyter-book of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("jupyter-book")
    if beside.is_file():
        return str(beside)
    found = shutil.which("jupyter-book")
    if found is None:
        pytest.fail("jupyter-book is not installed: pip install -e '.[book,test]'")
    return found


@pytest.fixture(scope="session")
def html_root() -> Path:
    """``_build/html``, built first (smoke settings) if it holds no index.html."""
    if not (HTML_ROOT / "index.html").is_file():
        env = {**os.environ, "IMBALANCE_SMOKE": "1"}
        command = [jupyter_book(), *BUILD_ARGS]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT_S, check=False)
        if result.returncode != 0 or not (HTML_ROOT / "index.html").is_file():
            log = (result.stdout + result.stderr)[-6000:]
            pytest.fail(f"the book build failed ({' '.join(command)}, exit "
                        f"{result.returncode}):\n{log}")
    return HTML_ROOT


@pytest.fixture(scope="session")
def site(html_root: Path) -> Iterator[Site]:
    """The built book on ``http://127.0.0.1:<free port>/``, for this session only."""
    log: list[tuple[str, int]] = []
    handler = partial(QuietHandler, directory=str(html_root), log=log)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(url=f"http://127.0.0.1:{server.server_address[1]}/", requests=log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """A headless Chromium; missing, it fails the test under CI and is skipped elsewhere."""
    binary = find_chromium()
    if binary is None:
        message = ("no headless browser: neither chromium nor chromium-browser is on PATH "
                   "(Debian: apt-get install -y --no-install-recommends chromium)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Chromium(binary=binary, profiles=tmp_path_factory.mktemp("chromium"))
