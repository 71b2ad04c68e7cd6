"""Check the built book in headless Chromium: pages render with their tables, figures and maths.

    python tests/book_check.py book/_build/html

Serves the HTML on localhost, loads the front page, the methods page and one executed notebook
page in headless Chromium (Debian's), checks the rendered DOM, and saves screenshots to
``book/_build/screenshots/``. Exits non-zero with a message on the first failure.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=15000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("book_check: no chromium found (apt-get install chromium)")


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def run(browser: str, url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                             capture_output=True, text=True, timeout=120)
    return out.stdout


def first_notebook_page(html: Path) -> Path:
    for p in ("compare", "l0", "acnn", "lottery", "irda", "proxns"):
        pages = sorted((html / p).glob("[0-9]*.html")) if (html / p).exists() else []
        if pages:
            return pages[0]
    sys.exit("book_check: no executed notebook page in the built book")


def main(html_dir: str) -> None:
    html = Path(html_dir)
    if not (html / "intro.html").exists():
        sys.exit(f"book_check: {html}/intro.html not found; build the book first")
    shots = html.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    httpd, port = serve(html)
    base = f"http://127.0.0.1:{port}"
    notebook = first_notebook_page(html).relative_to(html).as_posix()
    checks = {
        "intro.html": ["<table", "Scorecard"],
        "methods.html": ["mjx-container"],
        notebook: ["<table", "<img", "Budget:"],
    }
    failures = []
    for page, needles in checks.items():
        dom = run(browser, f"{base}/{page}", "--dump-dom")
        for needle in needles:
            if needle not in dom:
                failures.append(f"{page}: rendered page lacks {needle!r}")
        if "cdn.jsdelivr.net/npm/mathjax" in dom:
            failures.append(f"{page}: MathJax is loaded from a CDN, not the vendored copy")
        name = page.replace("/", "_").replace(".html", ".png")
        run(browser, f"{base}/{page}", f"--screenshot={shots / name}", "--window-size=1280,1600")
        if not (shots / name).exists() or (shots / name).stat().st_size < 10_000:
            failures.append(f"{page}: screenshot missing or blank")
    httpd.shutdown()
    if failures:
        sys.exit("book_check failed:\n  " + "\n  ".join(failures))
    print(f"book_check: {len(checks)} pages rendered; screenshots in {shots}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "book/_build/html")
