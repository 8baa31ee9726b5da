"""Preview HTTP endpoint: MJPEG stream, status page, zone heat map, Prometheus metrics.

Bound to 127.0.0.1 by default (reach it over an SSH tunnel); binding elsewhere is
an explicit configuration choice. Endpoints:

- ``/``             status page: fps, latency, drops per stage, preview and zone heat map
- ``/stream.mjpg``  multipart MJPEG of the tone-mapped output
- ``/frame.jpg``    the latest preview frame
- ``/zones.png``    LED zone heat map
- ``/stats.json``   the pipeline statistics
- ``/metrics``      Prometheus text exposition format
"""

from __future__ import annotations

import html
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["PreviewServer", "prometheus_text"]

log = logging.getLogger("edgehdr.preview")


def prometheus_text(stats: dict) -> str:
    """Pipeline statistics in the Prometheus text format (version 0.0.4)."""
    lines = []

    def metric(name, kind, helptext, samples):
        lines.append(f"# HELP edgehdr_{name} {helptext}")
        lines.append(f"# TYPE edgehdr_{name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            label = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
            lines.append(f"edgehdr_{name}{label} {float(value):.6g}")

    metric("frames_captured_total", "counter", "Brackets read from the source.", [({}, stats.get("frames_captured"))])
    metric("frames_completed_total", "counter", "Frames through every stage.", [({}, stats.get("frames_completed"))])
    metric("frames_dropped_total", "counter", "Frames dropped under overload.", [({}, stats.get("frames_dropped"))])
    metric("frames_failed_total", "counter", "Frames dropped by a stage error.", [({}, stats.get("frames_failed"))])
    metric("source_restarts_total", "counter", "Source reopenings.", [({}, stats.get("source_restarts"))])
    metric("fps", "gauge", "Completed frames per second since start.", [({}, stats.get("fps"))])
    metric("capture_to_zones_seconds", "gauge", "Capture to zone values sent.",
           [({"quantile": "0.5"}, _ms(stats.get("capture_to_zones_ms_median"))),
            ({"quantile": "0.99"}, _ms(stats.get("capture_to_zones_ms_p99")))])
    stages = stats.get("stages", [])
    metric("stage_latency_seconds", "gauge", "Per-stage processing time (median).",
           [({"stage": s["name"]}, _ms(s.get("latency_ms_median"))) for s in stages])
    metric("stage_fps", "gauge", "Per-stage frames per second.", [({"stage": s["name"]}, s.get("fps")) for s in stages])
    metric("stage_dropped_total", "counter", "Frames dropped before the stage.",
           [({"stage": s["name"]}, s.get("dropped")) for s in stages])
    metric("stage_errors_total", "counter", "Frames a stage failed on.",
           [({"stage": s["name"]}, s.get("errors")) for s in stages])
    link = stats.get("link") or {}
    metric("link_frames_sent_total", "counter", "Zone frames written to the controller link.",
           [({}, link.get("frames_sent"))])
    metric("link_reconnects_total", "counter", "Controller link reconnections.", [({}, link.get("reconnects"))])
    return "\n".join(lines) + "\n"


def _ms(value):
    return None if value is None else value / 1000.0


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>EdgeHDR</title>
<meta http-equiv="refresh" content="2"><style>body{{font-family:sans-serif;background:#111;color:#ddd}}
td,th{{padding:2px 10px;text-align:right}} img{{margin:4px;border:1px solid #444}}</style></head><body>
<h2>EdgeHDR: {fps} fps, capture-to-zones {lat_med} ms (p99 {lat_p99} ms), dropped {dropped}, failed {failed}</h2>
<img src="/frame.jpg" width="640"><img src="/zones.png" width="320">
<table><tr><th>stage</th><th>fps</th><th>median ms</th><th>p99 ms</th><th>dropped</th><th>errors</th></tr>{rows}</table>
<p><a href="/stream.mjpg">live MJPEG</a> &middot; <a href="/metrics">metrics</a> &middot;
<a href="/stats.json">stats.json</a></p></body></html>"""


class PreviewServer:
    """Serves a ``PreviewState`` over HTTP on a background thread."""

    def __init__(self, state, *, host: str = "127.0.0.1", port: int = 8080):
        self.state = state
        handler = self._handler()
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="preview-http", daemon=True)

    @property
    def address(self):
        return self.httpd.server_address

    def start(self) -> "PreviewServer":
        self._thread.start()
        log.info("preview on http://%s:%d/", *self.address)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # quiet: the daemon logs structured lines itself
                log.debug("preview %s " + fmt, self.client_address[0], *args)

            def _send(self, code, ctype, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/":
                    st = state.stats()
                    rows = "".join(
                        f"<tr><td>{html.escape(s['name'])}</td><td>{s['fps']}</td><td>{s['latency_ms_median']}</td>"
                        f"<td>{s['latency_ms_p99']}</td><td>{s['dropped']}</td><td>{s['errors']}</td></tr>"
                        for s in st.get("stages", []))
                    body = _PAGE.format(fps=st.get("fps"), lat_med=st.get("capture_to_zones_ms_median"),
                                        lat_p99=st.get("capture_to_zones_ms_p99"), dropped=st.get("frames_dropped"),
                                        failed=st.get("frames_failed"), rows=rows)
                    self._send(200, "text/html; charset=utf-8", body.encode())
                elif path == "/stats.json":
                    self._send(200, "application/json", json.dumps(state.stats(), default=str).encode())
                elif path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4", prometheus_text(state.stats()).encode())
                elif path == "/frame.jpg" and state.jpeg is not None:
                    self._send(200, "image/jpeg", state.jpeg)
                elif path == "/zones.png" and state.zones_png is not None:
                    self._send(200, "image/png", state.zones_png)
                elif path == "/stream.mjpg":
                    self.send_response(200)
                    self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    seq = -1
                    try:
                        while True:
                            seq, jpeg = state.wait_frame(seq)
                            if jpeg is None:
                                continue
                            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                             + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        return
                else:
                    self._send(404, "text/plain", b"not found\n")

        return Handler
