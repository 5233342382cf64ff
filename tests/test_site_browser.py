"""The built site in headless Chromium: served on 127.0.0.1, the home page, an API
page and a gallery page render (a screenshot with something on it, the page's
title, no console error, no failed request), and every internal link of every
page resolves, anchors included.

Chromium (Debian's ``chromium``) is driven through the DevTools protocol over
``--remote-debugging-pipe`` (NUL-separated JSON on file descriptors 3 and 4), so
no driver and no Python package is needed. Without ``chromium`` on PATH the
browser tests skip, unless ``FASTMLP_REQUIRE_BROWSER=1`` (CI sets it).

Run as a script to rewrite the committed screenshots from a built site::

    python tests/test_site_browser.py docs/_build/html docs/screenshots
"""

import base64
import contextlib
import functools
import http.server
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest

# page, what its title must hold, the screenshot's name under docs/screenshots/
PAGES = [("index.html", "fastmlp", "home.png"),
         ("generated/fastmlp.MLP.html", "fastmlp.MLP", "api.png"),
         ("auto_examples/mnist_98_recipe.html", "98%", "gallery.png")]
WINDOW = (1280, 900)
# Without the networking flags Chromium tries Google's hosts at start, which a closed
# network refuses; a fresh profile per run keeps nothing between runs.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe"]


def chromium_path():
    """Debian's Chromium, or a skip (a failure where FASTMLP_REQUIRE_BROWSER=1)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("FASTMLP_REQUIRE_BROWSER") == "1":
            pytest.fail("FASTMLP_REQUIRE_BROWSER=1 but chromium is not on PATH")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return path


class Chromium:
    """A headless Chromium spoken to over its DevTools pipe, one page at a time."""

    def __init__(self, path, timeout=60.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="fastmlp-chromium-")
        to_browser, self._send_fd = os.pipe()
        self._recv_fd, from_browser = os.pipe()

        def give_pipes():
            # The protocol's fixed descriptors, 3 in and 4 out; copied high first so
            # neither dup2 overwrites the other pipe. Python's own descriptors are
            # close-on-exec, so close_fds=False lets only these two through.
            read, write = os.dup(to_browser), os.dup(from_browser)
            os.dup2(read, 3)
            os.dup2(write, 4)
        self._proc = subprocess.Popen(
            [path, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=give_pipes, close_fds=False)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self._events = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, method, session=None, **params):
        """Sends one command and returns its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(self.timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self._events.append(reply)

    def events_until(self, method, seconds):
        """Every event until ``method`` arrives (it included), or for ``seconds``
        (``method=None``: all of them)."""
        deadline = time.monotonic() + seconds
        while method is None or not any(e.get("method") == method for e in self._events):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self._events.append(self._receive(left))
            except TimeoutError:
                break
        events, self._events = self._events, []
        return events

    def _receive(self, seconds):
        deadline = time.monotonic() + seconds
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._recv_fd], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._recv_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def visit(self, url, settle=1.0):
        """Loads ``url`` in a fresh tab: its title, a PNG screenshot and every error
        the page gave (console errors, uncaught exceptions, failed requests)."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target,
                            flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session)
        self.call("Emulation.setDeviceMetricsOverride", session, width=WINDOW[0],
                  height=WINDOW[1], deviceScaleFactor=1, mobile=False)
        self._events.clear()
        self.call("Page.navigate", session, url=url)
        events = self.events_until("Page.loadEventFired", self.timeout)
        events += self.events_until(None, settle)           # late scripts and requests
        title = self.call("Runtime.evaluate", session, expression="document.title",
                          returnByValue=True)["result"]["value"]
        shot = self.call("Page.captureScreenshot", session, format="png")["data"]
        self.call("Target.closeTarget", targetId=target)
        errors = [e for e in (page_error(event) for event in events
                              if event.get("sessionId") == session) if e]
        return title, base64.b64decode(shot), errors

    def close(self):
        with contextlib.suppress(Exception):
            self.call("Browser.close")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(10)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._send_fd, self._recv_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)


def page_error(event):
    """What went wrong, as one line, if this DevTools event reports an error."""
    method, params = event.get("method"), event.get("params", {})
    if "/favicon.ico" in json.dumps(params):   # the browser's own guess, not the page's link
        return None
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
        return f"console.{params['type']}: {' '.join(map(str, args))}"
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "uncaught: " + details.get("exception", {}).get("description", details["text"])
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        entry = params["entry"]
        return f"{entry['source']}: {entry['text']} {entry.get('url', '')}".rstrip()
    if method == "Network.loadingFailed":
        return f"request failed: {params['errorText']}"
    if method == "Network.responseReceived" and params["response"]["status"] >= 400:
        return f"HTTP {params['response']['status']}: {params['response']['url']}"
    return None


@contextlib.contextmanager
def served(root):
    """``root`` over HTTP on 127.0.0.1 (a free port), quietly; yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class Links(HTMLParser):
    """The links (href, src) and the anchors (id, name) of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links, self.anchors = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag != "meta" else ():
            if attrs.get(key):
                self.anchors.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])


def site_pages(root):
    """Every HTML page of a built site, relative to it: the crawl's starting points, so
    a page nothing links to (Sphinx's py-modindex.html) is checked too. ``_static/``
    holds the theme's files; its one .html is a Jinja template, not a page."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if p.relative_to(root).parts[0] != "_static")


def broken_links(base, start=("index.html",)):
    """Every internal link of the site under ``base`` that does not resolve, as
    "page -> link (why)": crawled from the pages ``start`` over HTTP, so it is what a
    reader's browser would get. A #fragment must name an id or name in its page."""
    pages, problems, todo, seen = {}, [], [base + page for page in start], set()

    def fetch(url):
        if url not in pages:
            try:
                with urllib.request.urlopen(url, timeout=30) as answer:
                    body = answer.read()
                    html = answer.headers.get_content_type() == "text/html"
            except urllib.error.HTTPError as error:
                pages[url] = (error.code, None)
            else:
                parsed = None
                if html:
                    parsed = Links()
                    parsed.feed(body.decode("utf-8", "replace"))
                pages[url] = (200, parsed)
        return pages[url]

    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        _, parsed = fetch(page)
        for link in parsed.links:
            target = urljoin(page, link)
            if not target.startswith(base):          # another site, mailto:, data:
                continue
            url, fragment = urldefrag(target)
            if urlsplit(url).path.endswith("/"):
                url += "index.html"
            status, found = fetch(url)
            if status != 200:
                problems.append(f"{page} -> {link} (HTTP {status})")
            elif fragment and found is not None and fragment not in found.anchors:
                problems.append(f"{page} -> {link} (no #{fragment} there)")
            elif found is not None:
                todo.append(url)
    return problems


def png_size_and_colours(data):
    """(width, height) from the PNG's header, and how many distinct byte values its
    pixels hold: a blank page is one colour, a rendered one many."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    pos, pixels = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            pixels += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return (width, height), len(set(zlib.decompress(pixels)))


@pytest.fixture(scope="module")
def browser():
    with Chromium(chromium_path()) as chromium:
        yield chromium


@pytest.mark.parametrize("page, title, shot", PAGES, ids=[p[2][:-4] for p in PAGES])
def test_a_page_renders_in_headless_chromium(site, browser, page, title, shot):
    with served(site) as base:
        got_title, png, errors = browser.visit(base + page)
    assert errors == [], errors
    assert title in got_title, got_title
    size, colours = png_size_and_colours(png)
    assert size == WINDOW and colours > 50, (size, colours)


def test_every_internal_link_of_the_site_resolves(site):
    with served(site) as base:
        assert broken_links(base, site_pages(site)) == []


# The checks themselves, on a hand-made site: each catches what it is for.

@pytest.fixture
def tiny_site(tmp_path):
    (tmp_path / "index.html").write_text(
        '<html><head><title>tiny</title></head><body id="top">'
        '<a href="#top">ok</a> <a href="a.html#there">ok</a> <a href="missing.html">no</a>'
        ' <a href="a.html#nowhere">no</a> <a href="https://example.org/">external</a>'
        '</body></html>')
    (tmp_path / "a.html").write_text('<html><body><p id="there">a</p></body></html>')
    (tmp_path / "noisy.html").write_text(
        '<html><head><title>noisy</title></head><body><img src="gone.png">'
        '<script>console.log("just-a-log"); console.error("boom"); no_such_function();'
        '</script></body></html>')
    return tmp_path


def test_the_link_check_catches_missing_pages_and_anchors(tiny_site):
    with served(tiny_site) as base:
        assert sorted(broken_links(base)) == [
            f"{base}index.html -> a.html#nowhere (no #nowhere there)",
            f"{base}index.html -> missing.html (HTTP 404)"]
        # noisy.html is linked from nowhere: only a crawl from every page sees its image
        assert f"{base}noisy.html -> gone.png (HTTP 404)" in broken_links(
            base, site_pages(tiny_site))


def test_the_page_check_catches_console_errors_exceptions_and_failed_requests(tiny_site):
    with Chromium(chromium_path()) as chromium, served(tiny_site) as base:
        title, _, quiet = chromium.visit(base + "index.html", settle=0.2)
        _, _, errors = chromium.visit(base + "noisy.html", settle=0.2)
    assert title == "tiny" and quiet == []
    text = "\n".join(errors)
    assert "console.error: boom" in text and "no_such_function" in text
    assert "gone.png" in text and "just-a-log" not in text


def write_screenshots(site, out):
    """The committed screenshots, from an already built site."""
    out.mkdir(parents=True, exist_ok=True)
    with Chromium(chromium_path()) as chromium, served(site) as base:
        for page, _, shot in PAGES:
            title, png, errors = chromium.visit(base + page)
            (out / shot).write_bytes(png)
            print(f"{shot}: {title!r}, {len(png):,} bytes, errors: {errors or 'none'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/test_site_browser.py BUILT_SITE OUT_DIR")
    write_screenshots(Path(sys.argv[1]), Path(sys.argv[2]))
