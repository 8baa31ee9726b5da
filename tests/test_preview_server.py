"""The preview HTTP server under hostile and heavy clients: bounded threads and connections, head deadline,
stream cap, HEAD, strict JSON, and the Prometheus text for outputs and the link."""

import json
import math
import re
import socket
import statistics
import threading
import time

import cv2
import numpy as np
import pytest

from edgehdr.pipeline.preview import LINK_STATES, PreviewServer, prometheus_text
from edgehdr.pipeline.sinks import PreviewState

STATS = {"fps": 29.5, "frames_captured": 10, "frames_completed": 9, "frames_dropped": 1, "frames_failed": 0,
         "capture_to_zones_ms_median": 20.0, "capture_to_zones_ms_p99": 40.0, "source_restarts": 0,
         "stages": [{"name": "merge", "fps": 30.0, "latency_ms_median": 6.0, "latency_ms_p99": 9.0, "dropped": 1,
                     "errors": 0}]}


def _state(stats=None):
    state = PreviewState(stats or (lambda: STATS))
    _, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    state.publish(jpeg.tobytes(), b"\x89PNG fake")
    return state


@pytest.fixture
def serve():
    servers = []

    def start(state=None, **kwargs):
        server = PreviewServer(state or _state(), host="127.0.0.1", port=0, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _parse(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers, body


def _request(server, method="GET", path="/stats.json", timeout=10.0):
    """One request on a fresh connection, read to the server's close: (status, headers, body)."""
    with socket.create_connection(server.address, timeout=timeout) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return _parse(data)


def _open_stream(server, method="GET"):
    """Starts /stream.mjpg and returns (socket, status, headers) once the response head has arrived."""
    s = socket.create_connection(server.address, timeout=10.0)
    s.sendall(f"{method} /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    status, headers, _ = _parse(data)
    return s, status, headers


def _wait_for(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_slowloris_holds_no_threads_and_others_are_served_fast(serve):
    baseline = threading.active_count()
    server = serve(workers=4, max_streams=2, head_timeout_s=60.0)
    slow = []
    try:
        for _ in range(200):
            s = socket.create_connection(server.address, timeout=5.0)
            s.sendall(b"GET /sta")
            slow.append(s)
        assert _wait_for(lambda: server.connection_stats()["open"] == 200)
        threads_held = threading.active_count()
        latencies = []
        for _ in range(50):
            t0 = time.perf_counter()
            status, _, body = _request(server)
            latencies.append(time.perf_counter() - t0)
            assert status == 200 and json.loads(body)["fps"] == 29.5
        threads_after = threading.active_count()
        p50 = statistics.median(latencies) * 1e3
        p99 = sorted(latencies)[math.ceil(0.99 * len(latencies)) - 1] * 1e3
        print(f"\n200 slow connections held: GET /stats.json p50 {p50:.2f} ms, p99 {p99:.2f} ms, max "
              f"{max(latencies) * 1e3:.2f} ms; threads {baseline} before the server, {threads_held} with the slow "
              f"connections, {threads_after} after 50 requests; {server.connection_stats()}")
        # acceptor + 4 workers, whatever the clients do
        assert threads_held <= baseline + 1 + 4 and threads_after <= baseline + 1 + 4
        stats = server.connection_stats()
        assert stats["open"] == 200 and stats["timed_out"] == 0  # the slow ones were still held throughout
        # No request waited behind the slow clients (that would be their 60 s head time-out), and the typical one
        # was served at once (500 ms: room for a loaded machine, far below a wait for a slow client). The tail (the
        # issue's p99 <= 100 ms; measured 1-9 ms, also with two busy processes on 2 cores) is printed above, not
        # asserted: a loaded machine's scheduling is not the server's.
        assert max(latencies) < 5.0 and p50 < 500.0
    finally:
        for s in slow:
            s.close()
    server.close()
    assert _wait_for(lambda: threading.active_count() <= baseline, timeout=5.0)


def test_slow_client_is_cut_off_at_the_head_deadline(serve):
    server = serve(head_timeout_s=1.0)
    request = b"GET /stats.json HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(server.address, timeout=5.0) as s:
        s.settimeout(0.5)
        t0 = time.monotonic()
        closed_at = None
        for byte in request:  # one byte every 0.5 s: the head would take 23 s
            try:
                s.sendall(bytes([byte]))
                if s.recv(4096) == b"":
                    closed_at = time.monotonic() - t0
                    break
            except TimeoutError:
                continue
            except OSError:  # reset while sending
                closed_at = time.monotonic() - t0
                break
    print(f"\nslow client closed after {closed_at} s (deadline 1.0 s)")
    assert closed_at is not None and 0.9 <= closed_at <= 2.0
    assert server.connection_stats()["timed_out"] == 1 and server.connection_stats()["open"] == 0


def test_idle_connection_frees_its_slot_after_the_deadline(serve):
    server = serve(head_timeout_s=0.5)
    with socket.create_connection(server.address, timeout=5.0) as s:
        assert s.recv(1) == b""  # sent nothing; the server hangs up
    assert _wait_for(lambda: server.connection_stats()["open"] == 0)
    assert _request(server)[0] == 200


def test_100_concurrent_stats_requests_all_succeed(serve):
    server = serve()
    barrier = threading.Barrier(100)
    results = [None] * 100

    def client(i):
        barrier.wait()
        t0 = time.perf_counter()
        status, _, body = _request(server)
        results[i] = (status, json.loads(body)["fps"], time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r is not None and r[:2] == (200, 29.5) for r in results)
    times = sorted(r[2] for r in results)
    print(f"\n100 concurrent GET /stats.json: p50 {times[49] * 1e3:.1f} ms, p90 {times[89] * 1e3:.1f} ms, "
          f"max {times[-1] * 1e3:.1f} ms")
    assert server.connection_stats()["rejected_over_limit"] == 0


@pytest.mark.parametrize("path", ["/", "/stats.json", "/metrics", "/frame.jpg", "/zones.png", "/nowhere"])
def test_head_answers_like_get_without_a_body(serve, path):
    server = serve()
    get_status, get_headers, get_body = _request(server, "GET", path)
    head_status, head_headers, head_body = _request(server, "HEAD", path)
    assert head_status == get_status and head_body == b"" and get_body
    assert head_headers["content-type"] == get_headers["content-type"]
    assert head_headers["content-length"] == get_headers["content-length"] == str(len(get_body))


def test_head_on_the_stream_sends_its_headers_and_ends(serve):
    server = serve()
    s, status, headers = _open_stream(server, "HEAD")
    with s:
        assert status == 200 and headers["content-type"].startswith("multipart/x-mixed-replace")
        assert s.recv(4096) == b""  # no frames, connection closed
    assert server.connection_stats()["streams"] == 0


def test_path_traversal_and_bad_requests_are_refused(serve):
    server = serve()
    for path in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/frame.jpg/../../x"]:
        assert _request(server, "GET", path)[0] == 404
    assert _request(server, "POST", "/stats.json")[0] == 501
    with socket.create_connection(server.address, timeout=5.0) as s:
        s.sendall(b"GET / FOO/1.0\r\n\r\n")  # a status line and headers, not http.server's HTTP/0.9 bare body
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.0 400 ") and b"Error code: 400" in data
    with socket.create_connection(server.address, timeout=5.0) as s:
        s.sendall(b"GET /stats.json HTTP/1.1\r\nX-Pad: " + b"a" * 20000)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:  # closed with part of the head unread: the 431 may be lost to the reset
            pass
        assert data == b"" or _parse(data)[0] == 431
    assert server.connection_stats()["bad_request"] == 1


def test_loopback_is_the_default_bind():
    server = PreviewServer(_state(), port=0)
    try:
        assert server.address[0] == "127.0.0.1"
    finally:
        server.close()  # never started: closes its sockets all the same


def test_stats_json_is_strict_with_nan_and_infinity(serve):
    stats = {**STATS, "fps": float("nan"), "capture_to_zones_ms_p99": np.float32("inf"),
             "stages": [{**STATS["stages"][0], "latency_ms_median": -math.inf, "fps": np.float64(12.5)}],
             "frames_captured": np.int64(10)}
    server = serve(_state(lambda: stats))

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    status, headers, body = _request(server)
    assert status == 200 and headers["content-type"] == "application/json"
    doc = json.loads(body, parse_constant=refuse)
    assert doc["fps"] is None and doc["capture_to_zones_ms_p99"] is None
    assert doc["stages"][0]["latency_ms_median"] is None and doc["stages"][0]["fps"] == 12.5
    assert doc["frames_captured"] == 10
    metrics = _request(server, path="/metrics")[2].decode()
    assert "edgehdr_fps NaN" in metrics and 'edgehdr_capture_to_zones_seconds{quantile="0.99"} +Inf' in metrics


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_]\w*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\\n]|\\[\\"n])*)"')


def _parse_prometheus(text: str):
    """{(name, ((label, value), ...)): float} and {name: type}; fails on any line that is not well formed."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types
            types[name] = kind
        elif line.startswith("# HELP "):
            continue
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = tuple((k, re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group()], v))
                           for k, v in _LABEL.findall(m.group(2) or ""))
            key = (m.group(1), labels)
            assert key not in samples
            samples[key] = float(m.group(3))
    return samples, types


def test_prometheus_outputs_link_state_and_label_escaping():
    nasty = 'png "main"\\dir\nline2'
    stats = {**STATS,
             "outputs": [{"sink": "video", "frames_written": 12345678, "errors": 0, "last_error": None},
                         {"sink": nasty, "frames_written": 7, "errors": 2, "last_error": "disk full"}],
             "link": {"state": "connecting", "errors": 3, "frames_sent": 100, "reconnects": 1}}
    samples, types = _parse_prometheus(prometheus_text(stats))
    assert samples[("edgehdr_output_frames_written_total", (("sink", "video"),))] == 12345678
    assert samples[("edgehdr_output_errors_total", (("sink", "video"),))] == 0
    assert samples[("edgehdr_output_frames_written_total", (("sink", nasty),))] == 7
    assert samples[("edgehdr_output_errors_total", (("sink", nasty),))] == 2
    assert types["edgehdr_output_errors_total"] == types["edgehdr_output_frames_written_total"] == "counter"
    state = {labels[0][1]: v for (name, labels), v in samples.items() if name == "edgehdr_link_state"}
    assert state == {"connected": 0, "connecting": 1, "rejected": 0, "down": 0}
    assert types["edgehdr_link_state"] == "gauge"
    assert samples[("edgehdr_link_errors_total", ())] == 3 and types["edgehdr_link_errors_total"] == "counter"
    assert samples[("edgehdr_link_frames_sent_total", ())] == 100
    # a state outside the enumeration is still reported, as the only 1
    samples, _ = _parse_prometheus(prometheus_text({"link": {"state": "running"}}))
    state = {labels[0][1]: v for (name, labels), v in samples.items() if name == "edgehdr_link_state"}
    assert state == {**dict.fromkeys(LINK_STATES, 0), "running": 1}
    # absent, nothing about them
    bare = prometheus_text(STATS)
    assert "output_" not in bare and "link_state" not in bare and "link_errors" not in bare
    _parse_prometheus(bare)


def test_status_page_shows_outputs_and_link(serve):
    stats = {**STATS, "outputs": [{"sink": "video", "frames_written": 5, "errors": 4,
                                   "last_error": "<No space left on device>"}],
             "link": {"state": "rejected", "errors": 9}}
    server = serve(_state(lambda: stats))
    page = _request(server, path="/")[2].decode()
    assert "<td>video</td><td>5</td><td>4</td><td>&lt;No space left on device&gt;</td>" in page
    assert "state rejected" in page and "errors 9" in page
    assert server.connection_stats()["requests"] == 1


def test_streams_over_the_cap_get_503_while_requests_are_served(serve):
    baseline = threading.active_count()
    server = serve(workers=4, max_streams=2)
    streams = [_open_stream(server) for _ in range(2)]
    try:
        assert [status for _, status, _ in streams] == [200, 200]
        assert _wait_for(lambda: server.connection_stats()["streams"] == 2)
        s, status, headers = _open_stream(server)
        s.close()
        assert status == 503 and headers["retry-after"]
        s, status, _ = _open_stream(server, "HEAD")
        s.close()
        assert status == 503
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(_request(server)[0])) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert statuses == [200] * 20
        assert server.connection_stats()["streams_refused"] == 1
        # frames still flow to the admitted streams
        server.state.publish(server.state.jpeg)
        data = b""
        while b"\xff\xd8" not in data:
            data += streams[0][0].recv(4096)
        assert b"--frame\r\nContent-Type: image/jpeg" in data
    finally:
        streams[0][0].close()
    # a freed slot is taken again
    assert _wait_for(lambda: server.connection_stats()["streams"] == 1)
    s, status, _ = _open_stream(server)
    assert status == 200
    # closing the server ends the running streams and joins every thread
    t0 = time.monotonic()
    server.close()
    for sock in (s, streams[1][0]):
        sock.settimeout(5.0)
        while sock.recv(65536):
            pass
        sock.close()
    assert time.monotonic() - t0 < 3.0
    assert _wait_for(lambda: threading.active_count() <= baseline, timeout=5.0)


def test_over_the_connection_limit_new_clients_get_503(serve):
    release = threading.Event()

    def slow_stats():
        release.wait(10)
        return STATS

    server = serve(_state(slow_stats), workers=2, max_streams=1, max_connections=4)
    results = []
    threads = [threading.Thread(target=lambda: results.append(_request(server)[0])) for _ in range(4)]
    for t in threads:
        t.start()
    try:  # two being answered, two queued with their heads read: nothing to evict (on a loaded machine a client
        # thread may not have sent its head yet when the other counts are reached: its connection could be evicted)
        assert _wait_for(lambda: server.connection_stats()["open"] == 4 and server.connection_stats()["requests"] == 2
                         and server.connection_stats()["queued"] == 2)
        with socket.create_connection(server.address, timeout=5.0) as s:
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
        assert data == b"" or _parse(data)[0] == 503
        assert server.connection_stats()["rejected_over_limit"] == 1
    finally:
        release.set()
        for t in threads:
            t.join(timeout=10)
    assert results == [200] * 4


def test_at_the_connection_limit_slow_heads_make_room(serve):
    server = serve(max_connections=10, head_timeout_s=60.0)
    slow = [socket.create_connection(server.address, timeout=5.0) for _ in range(30)]
    try:
        for s in slow:
            s.sendall(b"GET /")
        assert _wait_for(lambda: server.connection_stats()["accepted"] == 30)
        status, _, _ = _request(server)
        stats = server.connection_stats()
        assert status == 200 and stats["evicted"] >= 21 and stats["open"] <= 10
        assert stats["rejected_over_limit"] == 0
    finally:
        for s in slow:
            s.close()


def test_construction_checks_the_limits():
    with pytest.raises(ValueError, match="max_streams"):
        PreviewServer(_state(), port=0, workers=2, max_streams=2)


def _raw(server, request: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=10.0) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_only_loopback_host_names_are_answered_on_loopback(serve):
    """DNS rebinding: a page whose own name now resolves to 127.0.0.1 sends its name as Host and must not read the
    camera; loopback names (with or without a port) and HTTP/1.0 requests without Host are answered."""
    server = serve()
    port = server.address[1]
    refused = (f"attacker.example:{port}", "attacker.example", "192.168.1.5", "127.0.0.1.evil.example",
               "dead.beef", "0x7f.1.example", "10.1", "127.1.")
    for host in refused:
        data = _raw(server, f"GET /frame.jpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert data.startswith(b"HTTP/1.0 403 ") and b"\xff\xd8" not in data, host
    # IPv4 shorthands of loopback, as curl sends them (a browser sends the dotted form)
    for host in (f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST",
                 f"127.1:{port}", "0x7f000001", "2130706433", "0177.0.0.1"):
        assert _raw(server, f"GET /frame.jpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()).startswith(
            b"HTTP/1.0 200 "), host
    assert _raw(server, b"GET /stats.json HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 ")
    assert server.connection_stats()["wrong_host"] == len(refused)
    anywhere = PreviewServer(_state(), host="0.0.0.0", port=0).start()  # exposed on purpose: any name
    try:
        data = _raw(anywhere, b"GET /stats.json HTTP/1.1\r\nHost: edgehdr-box.lan\r\n\r\n")
        assert data.startswith(b"HTTP/1.0 200 ")
    finally:
        anywhere.close()


def test_a_request_that_fails_gets_a_500_and_the_log_has_the_cause(serve, caplog):
    """Statistics that raise: the client got an empty reply and the log line no cause before."""
    def broken():
        raise KeyError("stage table")

    server = serve(_state(broken))
    with caplog.at_level("DEBUG", logger="edgehdr.preview"):
        for path in ("/stats.json", "/metrics", "/"):
            assert _request(server, "GET", path)[0] == 500, path
    assert server.connection_stats()["failed"] == 3
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info[0] is KeyError  # one error line per 10 s, the rest debug
    assert _request(server, "GET", "/frame.jpg")[0] == 200  # the server goes on


def test_frames_not_there_yet_are_503_with_retry_after(serve):
    server = serve(PreviewState(lambda: STATS))
    for path in ("/frame.jpg", "/zones.png"):
        status, headers, _ = _request(server, "GET", path)
        assert status == 503 and headers["retry-after"] == "1", path
    assert _request(server, "GET", "/nothing.jpg")[0] == 404


def test_a_dead_acceptor_closes_the_port_and_says_so(serve, caplog, monkeypatch):
    """The acceptor failing (a fault injected into its head reader) used to leave a port that completed the TCP
    handshake and answered nothing: the port is closed (clients are refused at once) and the stats say so."""
    server = serve()
    assert _request(server)[0] == 200

    def fail(*args):
        raise RuntimeError("injected")

    monkeypatch.setattr(server, "_read_head", fail)
    with caplog.at_level("ERROR", logger="edgehdr.preview"):
        try:
            with socket.create_connection(server.address, timeout=5.0) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                s.recv(10)
        except OSError:
            pass
        assert _wait_for(lambda: server.connection_stats()["acceptor_failed"] == 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=5.0).close()
    assert any("preview is down" in r.getMessage() and r.exc_info for r in caplog.records)


def test_loopback_is_judged_by_the_bound_address_and_allowed_hosts_are_answered(serve):
    """A bind to ::1 or a name that resolves to loopback is loopback-only (the check read the configured string
    before); allowed_hosts lets a reverse proxy on this machine pass its own Host on."""
    from edgehdr.pipeline.preview import _is_loopback

    assert _is_loopback("127.0.1.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5") and not _is_loopback("localhost.evil")
    server = PreviewServer(_state(), host="localhost", port=0, allowed_hosts=["Preview.Example"]).start()
    try:
        assert server.loopback_only
        assert _raw(server, b"GET /stats.json HTTP/1.1\r\nHost: preview.example\r\n\r\n").startswith(b"HTTP/1.0 200")
        assert _raw(server, b"GET /stats.json HTTP/1.1\r\nHost: other.example\r\n\r\n").startswith(b"HTTP/1.0 403")
    finally:
        server.close()


def test_zones_are_404_for_a_run_without_dimming(serve):
    from edgehdr.pipeline.sinks import PreviewSink

    state = PreviewState(lambda: STATS)
    PreviewSink(state, None)  # no layout: the run has no dimming
    status, headers, body = _request(serve(state), "GET", "/zones.png")
    assert status == 404 and b"no dimming" in body and "retry-after" not in headers


def test_a_stream_that_fails_midway_is_cut_not_given_an_error_page_inside_it(serve, monkeypatch):
    server = serve()
    calls = []

    def wait_frame(last, timeout_s=2.0):
        calls.append(last)
        if len(calls) > 1:
            raise RuntimeError("injected")
        return 1, server.state.jpeg

    monkeypatch.setattr(server.state, "wait_frame", wait_frame)
    with socket.create_connection(server.address, timeout=10.0) as s:
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.0 200 ") and b"--frame" in data and b"500 Internal" not in data
    assert _wait_for(lambda: server.connection_stats()["failed"] == 1)
