"""A local web server for the built book and a headless Chromium to open it with."""

from __future__ import annotations

import http.server
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_TIMEOUT_S = 180
# Virtual time a page gets to run its scripts (MathJax loads its parts, then typesets).
VIRTUAL_TIME_BUDGET_MS = 30_000
WINDOW_SIZE = (1280, 2000)


class BrowserError(RuntimeError):
    """Chromium failed or produced nothing."""


@dataclass
class Site:
    """A local web server of the built book, and what it answered."""

    url: str
    requests: list[tuple[str, int]] = field(default_factory=list)

    def failed(self) -> list[tuple[str, int]]:
        """The requests answered with an HTTP error."""
        return [(path, code) for path, code in self.requests if code >= 400]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, records (path, status) of each request in ``log``, prints nothing."""

    def __init__(self, *args, log: list[tuple[str, int]], **kwargs) -> None:
        self.log = log
        super().__init__(*args, **kwargs)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        try:
            self.log.append((self.path, int(code)))
        except (TypeError, ValueError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


def find_chromium() -> str | None:
    """The path of ``chromium`` or ``chromium-browser``, if either is on PATH."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class Chromium:
    """A headless Chromium, one process per call, offline: every host but 127.0.0.1 fails
    to resolve, so whatever a page would fetch from the web stays missing."""

    binary: str
    profiles: Path

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        profile = self.profiles / f"profile-{len(list(self.profiles.iterdir()))}"
        profile.mkdir()
        command = [
            self.binary, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", *args,
        ]
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=CHROMIUM_TIMEOUT_S, check=False)
        if result.returncode != 0:
            raise BrowserError(f"chromium failed (exit {result.returncode}): "
                               f"{' '.join(command)}\n{result.stderr[-3000:]}")
        return result

    def dump_dom(self, url: str, window_size: tuple[int, int] | None = None) -> str:
        """The page's DOM after its scripts ran (in a window of ``window_size``, if given)."""
        size = [f"--window-size={window_size[0]},{window_size[1]}"] if window_size else []
        dom = self._run(*size, "--dump-dom", url).stdout
        if "<html" not in dom.lower():
            raise BrowserError(f"chromium dumped no page for {url}: {dom[:200]!r}")
        return dom

    def screenshot(self, url: str, path: Path) -> Path:
        """A PNG of the page's first WINDOW_SIZE pixels, written to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        width, height = WINDOW_SIZE
        self._run(f"--screenshot={path}", f"--window-size={width},{height}", url)
        if not path.is_file():
            raise BrowserError(f"chromium wrote no screenshot of {url} to {path}")
        return path
