"""Preview HTTP endpoint: MJPEG stream, status page, zone heat map, Prometheus metrics.

Bound to 127.0.0.1 by default (reach it over an SSH tunnel); binding elsewhere is
an explicit configuration choice. Endpoints (each answers GET and HEAD):

- ``/``             status page: fps, latency, drops per stage, outputs, link, preview and zone heat map
- ``/stream.mjpg``  multipart MJPEG of the tone-mapped output
- ``/frame.jpg``    the latest preview frame
- ``/zones.png``    LED zone heat map
- ``/stats.json``   the pipeline statistics (strict JSON: NaN and infinities become null)
- ``/metrics``      Prometheus text exposition format

The server holds a bounded number of threads whatever the clients do. One
acceptor thread accepts connections and reads request heads with a selector,
without blocking; a connection is handed to a fixed pool of worker threads only
once its whole request head has arrived, so a slow or idle client never holds a
worker. A head that has not arrived within ``head_timeout_s`` of the connection
is cut off. At most ``max_connections`` connections are open at once: beyond
that the oldest connection still sending its head is closed to make room, or,
when every open connection is being answered, the new one gets a 503. MJPEG
streams are long-lived and occupy a worker each, so at most ``max_streams`` of
them run at once (fewer than the workers); they end when the server closes.
Writes time out after ``write_timeout_s``. One request per connection (HTTP/1.0).
"""

from __future__ import annotations

import contextlib
import html
import io
import ipaddress
import logging
import math
import queue
import selectors
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from edgehdr.io import dumps_json, null_undefined

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from edgehdr.pipeline.sinks import PreviewState

__all__ = ["LINK_STATES", "PreviewServer", "prometheus_text"]

log = logging.getLogger("edgehdr.preview")

LINK_STATES = ("connected", "connecting", "rejected", "down")
"""The controller link states ``edgehdr_link_state`` enumerates (an unknown current state is added)."""


def prometheus_text(stats: dict[str, Any]) -> str:
    """Pipeline statistics in the Prometheus text format (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, helptext: str, samples: Iterable[tuple[dict[str, Any], Any]]) -> None:
        lines.append(f"# HELP edgehdr_{name} {helptext}")
        lines.append(f"# TYPE edgehdr_{name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            labels = dict(labels)
            suffix = labels.pop("__suffix__", "")  # a summary's _sum and _count
            label = "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}" if labels else ""
            lines.append(f"edgehdr_{name}{suffix}{label} {_sample_value(value)}")

    metric("frames_captured_total", "counter", "Brackets read from the source.", [({}, stats.get("frames_captured"))])
    metric("frames_completed_total", "counter", "Frames through every stage.", [({}, stats.get("frames_completed"))])
    metric("frames_dropped_total", "counter", "Frames dropped under overload.", [({}, stats.get("frames_dropped"))])
    metric("frames_failed_total", "counter", "Frames dropped by a stage error.", [({}, stats.get("frames_failed"))])
    metric("source_restarts_total", "counter", "Source reopenings.", [({}, stats.get("source_restarts"))])
    metric("fps", "gauge", "Completed frames per second since start.", [({}, stats.get("fps"))])
    # Latencies are summaries: quantiles over the recent window, _sum and _count since start.
    metric("capture_to_zones_seconds", "summary", "Capture to zone values sent.",
           [({"quantile": "0.5"}, _ms(stats.get("capture_to_zones_ms_median"))),
            ({"quantile": "0.99"}, _ms(stats.get("capture_to_zones_ms_p99"))),
            ({"__suffix__": "_sum"}, stats.get("capture_to_zones_s_total")),
            ({"__suffix__": "_count"}, stats.get("capture_to_zones_count"))])
    stages = stats.get("stages", [])
    metric("stage_latency_seconds", "summary", "Per-stage processing time.",
           [sample for s in stages for sample in (
               ({"stage": s["name"], "quantile": "0.5"}, _ms(s.get("latency_ms_median"))),
               ({"stage": s["name"], "quantile": "0.99"}, _ms(s.get("latency_ms_p99"))),
               ({"__suffix__": "_sum", "stage": s["name"]}, s.get("latency_s_total")),
               ({"__suffix__": "_count", "stage": s["name"]}, s.get("processed")))])
    metric("stage_cpu_seconds_total", "counter", "CPU time of each stage's thread while processing (capture: "
           "reading the source).", [({"stage": s["name"]}, s.get("cpu_s_total")) for s in stages])
    metric("stage_fps", "gauge", "Per-stage frames per second.", [({"stage": s["name"]}, s.get("fps")) for s in stages])
    metric("stage_dropped_total", "counter", "Frames dropped before the stage.",
           [({"stage": s["name"]}, s.get("dropped")) for s in stages])
    metric("stage_errors_total", "counter", "Frames a stage failed on.",
           [({"stage": s["name"]}, s.get("errors")) for s in stages])
    radiance = stats.get("radiance_buffers") or {}
    metric("buffer_waits_total", "counter", "Times a stage found every buffer of a bounded pool in flight and waited "
           "for a release ([source] buffers, [run] radiance_buffers).",
           [({"buffer": "source"}, stats.get("source_buffer_waits")), ({"buffer": "radiance"}, radiance.get("waits"))])
    metric("buffer_wait_seconds_total", "counter", "Time spent in those waits.",
           [({"buffer": "source"}, stats.get("source_buffer_wait_s")),
            ({"buffer": "radiance"}, radiance.get("wait_s"))])
    outputs = stats.get("outputs") or []
    if outputs:
        metric("output_frames_written_total", "counter", "Frames an output sink wrote.",
               [({"sink": o["sink"]}, o.get("frames_written")) for o in outputs])
        metric("output_errors_total", "counter", "Writes an output sink failed.",
               [({"sink": o["sink"]}, o.get("errors")) for o in outputs])
    faults = stats.get("network_non_finite_frames") or {}
    quality_faults = (stats.get("quality") or {}).get("non_finite_frames")
    if faults or quality_faults is not None:
        metric("network_non_finite_frames_total", "counter", "Frames a stage's network answered NaN or infinity "
               "in (replaced: equal merge weights, the previous tone-mapping grid, full zone light; a score left out).",
               [*(({"stage": name}, n) for name, n in faults.items()), ({"stage": "score"}, quality_faults)])
    keys = stats.get("non_finite_key_frames") or {}
    if keys:
        metric("non_finite_key_frames_total", "counter", "Frames whose median luminance, the neural tone mapper's "
               "key, was not finite (radiance near float32's top; the previous median served).",
               [({"stage": name}, n) for name, n in keys.items()])
    link = stats.get("link") or {}
    metric("link_frames_sent_total", "counter", "Zone frames written to the controller link.",
           [({}, link.get("frames_sent"))])
    metric("link_reconnects_total", "counter", "Controller link reconnections.", [({}, link.get("reconnects"))])
    current = link.get("state")
    if current is not None:
        states = LINK_STATES if current in LINK_STATES else (*LINK_STATES, current)
        metric("link_state", "gauge", "Controller link state: 1 for the current state, 0 for the others.",
               [({"state": s}, int(s == current)) for s in states])
    if link.get("errors") is not None:
        metric("link_errors_total", "counter", "Controller link errors.", [({}, link.get("errors"))])
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> float | None:
    return None if value is None else value / 1000.0


def _label_value(value: object) -> str:
    """A label value escaped as the exposition format wants: backslash, double quote, newline."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample_value(value: float) -> str:
    """Integers in full (counters past a million stay exact), other numbers to 6 digits, NaN/+Inf/-Inf spelt out."""
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return f"{v:.6g}"


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>EdgeHDR</title>
<meta http-equiv="refresh" content="2"><style>body{{font-family:sans-serif;background:#111;color:#ddd}}
td,th{{padding:2px 10px;text-align:right}} img{{margin:4px;border:1px solid #444}}</style></head><body>
<h2>EdgeHDR: {fps} fps, capture-to-zones {lat_med} ms (p99 {lat_p99} ms), dropped {dropped}, failed {failed}</h2>
<img src="/frame.jpg" width="640"><img src="/zones.png" width="320">
<table><tr><th>stage</th><th>fps</th><th>median ms</th><th>p99 ms</th><th>dropped</th><th>errors</th></tr>{rows}</table>
{extra}<p><a href="/stream.mjpg">live MJPEG</a> &middot; <a href="/metrics">metrics</a> &middot;
<a href="/stats.json">stats.json</a></p></body></html>"""


def _status_page(st: dict[str, Any]) -> str:
    def cell(value: object) -> str:
        return f"<td>{html.escape(str(value))}</td>"

    rows = "".join("<tr>" + "".join(cell(s.get(k)) for k in ("name", "fps", "latency_ms_median", "latency_ms_p99",
                                                               "dropped", "errors")) + "</tr>"
                   for s in st.get("stages", []))
    extra = ""
    outputs = st.get("outputs") or []
    if outputs:
        extra += ("<table><tr><th>output</th><th>frames written</th><th>errors</th><th>last error</th></tr>"
                  + "".join("<tr>" + "".join(cell("" if o.get(k) is None else o.get(k))
                                             for k in ("sink", "frames_written", "errors", "last_error")) + "</tr>"
                            for o in outputs) + "</table>\n")
    link = st.get("link") or {}
    if link:
        parts = [f"{label} {html.escape(str(link[k]))}" for k, label in (
            ("state", "state"), ("errors", "errors"), ("frames_sent", "frames sent"), ("reconnects", "reconnects"))
            if link.get(k) is not None]
        extra += f"<p>controller link: {', '.join(parts)}</p>\n"
    return _PAGE.format(fps=st.get("fps"), lat_med=st.get("capture_to_zones_ms_median"),
                        lat_p99=st.get("capture_to_zones_ms_p99"), dropped=st.get("frames_dropped"),
                        failed=st.get("frames_failed"), rows=rows, extra=extra)


_MAX_HEAD_BYTES = 16384
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
         b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n")
_TOO_LARGE = (b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
              b"Connection: close\r\n\r\nhead too large.\n")
_FAILED = (b"HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 35\r\n"
           b"Connection: close\r\n\r\nrequest failed; see the daemon log\n")
_WARN_EVERY_S = 10.0


def _is_loopback(address: str) -> bool:
    """An IP address of this machine's loopback (127.0.0.0/8, ::1, ::ffff:127.x.x.x); a name is not.

    IPv4's numeric shorthands (``127.1``, ``0x7f000001``), which curl sends as written, count as the address
    they stand for: a browser turns any host name that parses as a number into that address itself, so no name
    a page could rebind has this form."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:  # a name ("127.0.0.1.evil.example" is one), or a shorthand
        if not address or address.strip("0123456789abcdefx.") or address.endswith("."):
            return False
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(address))
        except OSError:
            return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


class _Pending:
    """A connection whose request head is still arriving."""

    __slots__ = ("addr", "deadline", "head")

    def __init__(self, addr: tuple[Any, ...], deadline: float) -> None:
        self.addr, self.deadline, self.head = addr, deadline, bytearray()


class PreviewServer:
    """Serves a ``PreviewState`` over HTTP on background threads (one acceptor, ``workers`` workers).

    ``connection_stats()`` counts what the server did with its connections.
    """

    def __init__(self, state: PreviewState, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 8,
                 max_connections: int = 256, max_streams: int = 3, head_timeout_s: float = 5.0,
                 write_timeout_s: float = 10.0, request_queue_size: int = 128,
                 allowed_hosts: Iterable[str] = ()) -> None:
        if workers < 1 or max_connections < 1 or not 0 <= max_streams < workers:
            raise ValueError(f"preview server needs workers >= 1, max_connections >= 1 and 0 <= max_streams < "
                             f"workers (got workers={workers}, max_connections={max_connections}, "
                             f"max_streams={max_streams})")
        self.state = state
        self.workers, self.max_connections, self.max_streams = workers, max_connections, max_streams
        self.head_timeout_s, self.write_timeout_s = head_timeout_s, write_timeout_s
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=request_queue_size)
        self._listener.setblocking(False)
        self._address = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        # (socket, client address, request head) per request; None tells a worker to stop
        self._jobs: queue.SimpleQueue[tuple[socket.socket, Any, bytes] | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._lock = threading.Lock()  # guards the counts, _open, _streams and _next_warning
        self._open = 0
        self._streams: set[socket.socket] = set()
        self._next_warning = 0.0
        self._counts = dict.fromkeys(("accepted", "rejected_over_limit", "evicted", "timed_out", "bad_request",
                                      "requests", "streams_refused", "failed", "wrong_host", "acceptor_failed"), 0)
        self._next_failure_log = 0.0
        # Host names a request may carry (DNS rebinding): a loopback-only server answers to loopback names only,
        # and to allowed_hosts (a reverse proxy on this machine that passes its own Host on)
        self.loopback_only = _is_loopback(self._address[0])
        self.allowed_hosts = {h.strip().lower() for h in allowed_hosts}
        self._threads = [threading.Thread(target=self._accept_loop, name="preview-accept", daemon=True)]
        self._threads += [threading.Thread(target=self._work_loop, name=f"preview-worker-{i}", daemon=True)
                          for i in range(workers)]
        self._started = False

    @property
    def address(self) -> tuple[Any, ...]:
        """(host, port) the server listens on (the port chosen by the system for port 0)."""
        return self._address

    def start(self) -> PreviewServer:
        self._started = True
        for thread in self._threads:
            thread.start()
        log.info("preview on http://%s:%d/", *self.address)
        return self

    def close(self) -> None:
        """Stop accepting, close waiting connections, end the streams, and join the threads."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._lock:
            for sock in self._streams:  # unblocks a stream stuck writing to a stalled client
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._started:
            self._wake_w.send(b"x")
            self._threads[0].join(timeout=5.0)
            for _ in range(self.workers):
                self._jobs.put(None)
            for thread in self._threads[1:]:
                thread.join(timeout=5.0)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's Host header may be answered: any where the server listens beyond loopback (the
        operator chose to expose it), loopback names only where it listens on loopback (a page that rebinds its
        own name to 127.0.0.1 reads nothing). Counted as ``wrong_host``."""
        if not self.loopback_only or host_header is None:  # HTTP/1.0 clients may send none; browsers always do
            return True
        name = host_header.strip().lower()
        if name.startswith("["):  # [IPv6]:port
            name = name[1:name.find("]")] if "]" in name else name
        elif name.count(":") == 1:  # name:port
            name = name.split(":", 1)[0]
        if name == "localhost" or _is_loopback(name) or name in self.allowed_hosts:
            return True
        with self._lock:
            self._counts["wrong_host"] += 1
        return False

    def connection_stats(self) -> dict[str, int]:
        """Counts since start (accepted, rejected_over_limit, evicted, timed_out, bad_request, requests,
        streams_refused), the current open connections and streams, and the requests whose head is read
        waiting for a worker (queued)."""
        with self._lock:
            return {**self._counts, "open": self._open, "streams": len(self._streams), "queued": self._jobs.qsize()}

    # ---------------------------------------------------------------------------- acceptor thread

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listener")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        pending: dict[socket.socket, _Pending] = {}  # in accept order, so the first has the earliest deadline
        try:
            while not self._closing.is_set():
                timeout = None
                if pending:
                    timeout = max(0.0, next(iter(pending.values())).deadline - time.monotonic())
                for key, _ in sel.select(timeout):
                    if key.data == "listener":
                        self._accept(sel, pending)
                    elif key.fileobj in pending:
                        self._read_head(sel, pending, key.fileobj)
                now = time.monotonic()
                while pending and next(iter(pending.values())).deadline <= now:
                    sock = next(iter(pending))
                    self._note("timed_out", "closing %s: no complete request head within %.1f s",
                               pending[sock].addr[0], self.head_timeout_s)
                    self._drop(sel, pending, sock)
        except Exception:  # the acceptor must report why it stopped
            log.exception("preview acceptor failed; the preview is down (the pipeline goes on)")
            self._listener.close()  # new clients are refused at once instead of waiting on a port nobody serves
            with self._lock:
                self._counts["acceptor_failed"] = 1
        finally:
            for sock in list(pending):
                self._drop(sel, pending, sock)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending]) -> None:
        for _ in range(64):  # drain the backlog a batch at a time
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors and the like: let the backlog wait
                log.warning("preview: accept failed: %s", exc)
                time.sleep(0.1)
                return
            with self._lock:
                full = self._open >= self.max_connections
            if full and pending:  # make room: the oldest connection still sending its head goes
                oldest = next(iter(pending))
                self._note("evicted", "closing %s to make room: %d connections open, its head still incomplete",
                           pending[oldest].addr[0], self.max_connections)
                self._drop(sel, pending, oldest)
            elif full:  # every open connection is being answered: refuse
                self._note("rejected_over_limit", "refusing %s: %d connections open", addr[0], self.max_connections)
                try:
                    sock.setblocking(False)
                    sock.send(_BUSY)
                except OSError:
                    pass
                sock.close()
                continue
            with self._lock:
                self._open += 1
                self._counts["accepted"] += 1
            sock.setblocking(False)
            pending[sock] = _Pending(addr, time.monotonic() + self.head_timeout_s)
            sel.register(sock, selectors.EVENT_READ, "client")

    def _read_head(self, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending],
                   sock: socket.socket) -> None:
        p = pending[sock]
        try:
            chunk = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client went away
            self._drop(sel, pending, sock)
            return
        p.head += chunk
        if b"\n\r\n" in p.head or b"\n\n" in p.head:  # the blank line that ends the head
            sel.unregister(sock)
            del pending[sock]
            sock.setblocking(True)
            self._jobs.put((sock, p.addr, bytes(p.head)))
        elif len(p.head) > _MAX_HEAD_BYTES:
            self._note("bad_request", "closing %s: request head over %d bytes", p.addr[0], _MAX_HEAD_BYTES,
                       warn=False)
            try:
                sock.send(_TOO_LARGE)
            except OSError:
                pass
            self._drop(sel, pending, sock)

    def _drop(self, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending], sock: socket.socket) -> None:
        sel.unregister(sock)
        del pending[sock]
        self._release(sock)

    def _release(self, sock: socket.socket) -> None:
        with self._lock:  # counted first, so a client that sees the close sees the count too
            self._open -= 1
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    def _note(self, what: str, message: str, *args: object, warn: bool = True) -> None:
        """Count ``what`` and log it: a warning at most every 10 s with the running counts, debug otherwise."""
        now = time.monotonic()
        with self._lock:
            self._counts[what] += 1
            counts = dict(self._counts)
            level = logging.DEBUG
            if warn and now >= self._next_warning:
                level, self._next_warning = logging.WARNING, now + _WARN_EVERY_S
        log.log(level, "preview: " + message + " (so far: %d refused over the limit, %d evicted, %d timed out, "
                "%d streams refused)", *args, counts["rejected_over_limit"], counts["evicted"],
                counts["timed_out"], counts["streams_refused"])

    # ---------------------------------------------------------------------------- worker threads

    def _work_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            sock, addr, head = job
            try:
                if not self._closing.is_set():
                    sock.settimeout(self.write_timeout_s)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with self._lock:
                        self._counts["requests"] += 1
                    _Handler(sock, head, addr, self)
            except OSError as exc:  # the client went away or stopped reading
                log.debug("preview: %s: %s", addr[0], exc)
            except Exception:  # a worker must survive any request (the handler answered 500 where it could)
                now = time.monotonic()
                with self._lock:
                    self._counts["failed"] += 1
                    failed = self._counts["failed"]
                    level = logging.DEBUG
                    if now >= self._next_failure_log:  # a failing /metrics is scraped every few seconds
                        level, self._next_failure_log = logging.ERROR, now + _WARN_EVERY_S
                log.log(level, "preview: request from %s failed (%d failed requests so far)", addr[0], failed,
                        exc_info=True)
            finally:
                self._release(sock)

    def _enter_stream(self, sock: socket.socket) -> bool:
        with self._lock:
            if len(self._streams) >= self.max_streams or self._closing.is_set():
                return False
            self._streams.add(sock)
            return True

    def _leave_stream(self, sock: socket.socket) -> None:
        with self._lock:
            self._streams.discard(sock)

    def _stream_slot_free(self) -> bool:
        with self._lock:
            return len(self._streams) < self.max_streams


class _SocketWriter(io.BufferedIOBase):
    """The handler's ``wfile``: every write goes out with ``sendall`` (under the socket's timeout), unbuffered,
    like ``socketserver``'s own writer."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer, /) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes

    def flush(self) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    """Answers one request whose head the acceptor has read.

    The preview server's workers construct it directly (not through a ``socketserver``
    server): ``preview`` is the server it answers for, ``self.server`` is not set.
    """

    # a malformed request line gets a status line and headers (HTTP/1.0), not http.server's HTTP/0.9 bare body
    default_request_version = "HTTP/1.0"

    def __init__(self, sock: socket.socket, head: bytes, client_address: tuple[Any, ...],
                 preview: PreviewServer) -> None:
        # What BaseRequestHandler.__init__ does (setup, handle, finish), with the request head already read.
        self.request = sock
        self.client_address = client_address
        self.preview = preview
        self._head = head
        self.setup()
        try:
            self.handle()
        except Exception:
            if not self.responded:  # an error page instead of a closed connection with no reply
                with contextlib.suppress(OSError):
                    self.connection.sendall(_FAILED)
            raise
        finally:
            self.finish()

    def setup(self) -> None:
        self.responded = False  # set once a status line went out: a failure after it cannot become a 500
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.wfile = _SocketWriter(self.connection)

    def finish(self) -> None:
        pass  # the worker closes the socket

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the daemon logs structured lines itself
        log.debug("preview %s " + fmt, self.client_address[0], *args)

    def do_GET(self) -> None:  # http.server API
        self._route(send_body=True)

    def do_HEAD(self) -> None:  # http.server API
        self._route(send_body=False)

    def _send(self, code: int, ctype: str, body: bytes, send_body: bool,
              headers: Iterable[tuple[str, str]] = ()) -> None:
        self.responded = True
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _route(self, send_body: bool) -> None:
        state = self.preview.state
        path = self.path.split("?", 1)[0]
        if not self.preview.host_allowed(self.headers.get("Host")):
            # DNS rebinding: a web page whose name now resolves to 127.0.0.1 must not read the camera as its own
            self._send(403, "text/plain", b"this preview answers only to localhost, 127.0.0.1, [::1] and "
                                          b"[preview] allowed_hosts\n", send_body)
            return
        if path == "/":
            self._send(200, "text/html; charset=utf-8", _status_page(state.stats()).encode(), send_body)
        elif path == "/stats.json":
            try:
                body = dumps_json(null_undefined(state.stats())).encode()
            except ValueError:
                log.exception("preview: /stats.json: statistics are not JSON")
                self._send(500, "text/plain", b"statistics are not JSON\n", send_body)
                return
            self._send(200, "application/json", body, send_body)
        elif path == "/metrics":
            self._send(200, "text/plain; version=0.0.4", prometheus_text(state.stats()).encode(), send_body)
        elif path == "/frame.jpg":
            if (jpeg := state.jpeg) is None:
                self._send(503, "text/plain", b"no frame yet\n", send_body, headers=[("Retry-After", "1")])
            else:
                self._send(200, "image/jpeg", jpeg, send_body)
        elif path == "/zones.png":
            if not state.zones_enabled:
                self._send(404, "text/plain", b"no zone values: this run has no dimming ([dimming] enabled)\n",
                           send_body)
            elif (png := state.zones_png) is None:
                self._send(503, "text/plain", b"no zone values yet\n", send_body,
                           headers=[("Retry-After", "1")])
            else:
                self._send(200, "image/png", png, send_body)
        elif path == "/stream.mjpg":
            self._stream(send_body)
        else:  # fixed endpoints only: nothing is read from the file system, so "/../x" is just unknown
            self._send(404, "text/plain", b"not found\n", send_body)

    def _stream(self, send_body: bool) -> None:
        srv = self.preview
        admitted = srv._enter_stream(self.connection) if send_body else srv._stream_slot_free()
        if not admitted:
            if send_body:
                srv._note("streams_refused", "refused a stream to %s: %d streams running", self.client_address[0],
                          srv.max_streams)
            self._send(503, "text/plain", b"too many streams\n", send_body, headers=[("Retry-After", "5")])
            return
        try:
            self.responded = True  # a failure from here on ends the stream; a 500 would land inside it
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self._stream_frames()
        finally:
            if send_body:
                srv._leave_stream(self.connection)

    def _stream_frames(self) -> None:
        """New frames as they come, the last one again every 2 s meanwhile, until the client or server goes."""
        srv, state = self.preview, self.preview.state
        seq, sent_seq, sent_at = -1, -1, 0.0
        try:
            while not srv._closing.is_set():
                seq, jpeg = state.wait_frame(seq, timeout_s=0.25)
                if jpeg is None or (seq == sent_seq and time.monotonic() - sent_at < 2.0):
                    continue
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                sent_seq, sent_at = seq, time.monotonic()
        except OSError as exc:  # the client went away, stopped reading, or the server shut the socket
            log.debug("preview: stream to %s ended: %s", self.client_address[0], exc)
