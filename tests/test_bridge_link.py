"""Host link against the controller simulator over real pty pairs (pyserial) and UDP sockets."""

from __future__ import annotations

import glob
import os
import socket
import time

import numpy as np
import pytest

from firmware_bridge.link import Link
from firmware_bridge.protocol import Config, MsgType, State
from firmware_bridge.simulator import ControllerSimulator, UdpControllerEndpoint
from firmware_bridge.transports import PtyPair, SerialTransport, SpiTransport, UdpTransport

# A 1 s watchdog with 100 ms heartbeats: a loaded CI machine can stall the link's thread for a few hundred ms,
# which a 250 ms watchdog would take for a dead host in the tests that expect a live one.
CONFIG = Config(rows=16, cols=24, bits=12, safe_level=300, watchdog_ms=1000, heartbeat_ms=100)


def wait_for(predicate, timeout_s=3.0, step_s=0.005):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


@pytest.fixture
def pty_pair(tmp_path):
    pair = PtyPair(tmp_path / "ttyEH0")
    yield pair
    pair.close()


@pytest.fixture
def controller(pty_pair):
    sim = ControllerSimulator(pty_pair.controller, rows=48, cols=48, vsync_hz=240).start()
    yield sim
    sim.stop()


def zones(seed, config=CONFIG):
    return np.random.default_rng(seed).integers(0, 1 << config.bits, (config.rows, config.cols)).astype(np.uint16)


def test_handshake_config_and_zones_reach_the_backlight(pty_pair, controller):
    with Link(SerialTransport(pty_pair.path, 2_000_000), CONFIG) as link:
        assert link.wait_running(3.0)
        for i in range(1, 6):
            link.send_zones(zones(i), frame_id=i)
            assert wait_for(lambda i=i: controller.last_frame_id == i)
            np.testing.assert_array_equal(controller.backlight_u16, zones(i))
        stats = link.stats()
    assert stats["controller"]["rows"] == 48 and stats["config_acked"] == 1
    assert controller.state == State.RUNNING
    assert controller.received[MsgType.ZONES] == 5
    # 12-bit zones travel packed: 16*24*12/8 = 576 data bytes instead of 768.
    assert controller.decoder.crc_errors == controller.decoder.framing_errors == 0


def test_latest_wins_never_queues_stale_frames(pty_pair, controller):
    with Link(SerialTransport(pty_pair.path), CONFIG) as link:
        assert link.wait_running(3.0)
        for i in range(1, 501):  # far faster than the wire and the 240 Hz vsync
            link.send_zones(zones(i % 7), frame_id=i)
        assert wait_for(lambda: controller.last_frame_id == 500)
        # The writer counts a frame as sent after its write returns: the controller can apply frame 500 first
        # (seen once in a full-suite run on 2 busy cores). Every submitted frame is counted, sent or superseded:
        assert wait_for(lambda: link.stats()["frames_sent"] + link.stats()["frames_superseded"] == 500)
        stats = link.stats()
    applied = [frame_id for frame_id, _ in controller.applied_log]
    assert applied[-1] == 500 and applied == sorted(applied), "frames applied out of order"
    assert stats["frames_superseded"] > 0, "a burst must supersede unsent frames, not queue them"
    assert stats["frames_sent"] + stats["frames_superseded"] == 500
    np.testing.assert_array_equal(controller.backlight_u16, zones(500 % 7))


def test_controller_falls_back_to_safe_level_when_the_host_goes_quiet(pty_pair, controller):
    link = Link(SerialTransport(pty_pair.path), CONFIG).start()
    assert link.wait_running(3.0)
    link.send_zones(zones(1), frame_id=1)
    assert wait_for(lambda: controller.last_frame_id == 1)
    link.close()  # host process dies: no more bytes, not even heartbeats
    assert wait_for(lambda: controller.state == State.FALLBACK, timeout_s=4 * CONFIG.watchdog_ms / 1000)
    assert np.all(controller.backlight_u16 == CONFIG.safe_level)
    assert controller.status().faults & 1
    with Link(SerialTransport(pty_pair.path), CONFIG) as link2:  # host back: frames resume
        assert link2.wait_running(3.0)
        link2.send_zones(zones(2), frame_id=2)
        assert wait_for(lambda: controller.state == State.RUNNING and controller.last_frame_id == 2)


def test_heartbeats_keep_an_idle_link_alive(pty_pair, controller):
    with Link(SerialTransport(pty_pair.path), CONFIG) as link:
        assert link.wait_running(3.0)
        link.send_zones(zones(3), frame_id=3)
        time.sleep(2.5 * CONFIG.watchdog_ms / 1000)  # no zone frames, only heartbeats
        assert controller.state == State.RUNNING
        assert link.stats()["heartbeats_received"] > 0 and link.stats()["reconnects"] == 0


def test_unplug_and_replug_reconnects_and_resends_config(tmp_path):
    path = tmp_path / "ttyEH0"
    pair = PtyPair(path)
    sim = ControllerSimulator(pair.controller, vsync_hz=240).start()
    link = Link(SerialTransport(str(path)), CONFIG).start()
    try:
        assert link.wait_running(3.0)
        link.send_zones(zones(1), frame_id=1)
        assert wait_for(lambda: sim.last_frame_id == 1)
        sim.stop()
        pair.close()  # unplug: the device node disappears
        assert wait_for(lambda: not link.running, timeout_s=2.0)
        for i in range(2, 50):
            link.send_zones(zones(i), frame_id=i)  # never blocks while unplugged
        pair = PtyPair(path)  # replug at the same (udev-stable) path
        sim = ControllerSimulator(pair.controller, vsync_hz=240).start()
        t_replug = time.monotonic()
        assert link.wait_running(3.0), link.stats()
        reconnect_s = time.monotonic() - t_replug
        link.send_zones(zones(50), frame_id=50)
        assert wait_for(lambda: sim.last_frame_id == 50)
        stats = link.stats()
        assert stats["reconnects"] >= 1 and stats["config_acked"] == 2 and stats["transport_errors"] >= 1
        assert sim.received[MsgType.CONFIG] >= 1
        assert reconnect_s < 2.0  # generous bound; `edgehdr bridge bench` reports the figure
    finally:
        link.close()
        sim.stop()
        pair.close()


def test_garbage_between_frames_costs_no_frame(pty_pair, controller):
    with Link(SerialTransport(pty_pair.path), CONFIG) as link:
        assert link.wait_running(3.0)
        for i in range(1, 21):
            link.send_zones(zones(i), frame_id=i)
            assert wait_for(lambda i=i: controller.last_frame_id == i)
            os.write(pty_pair.slave_fd, os.urandom(50) + b"\x00")  # line noise reaching the controller
    status = controller.status()
    assert status.frames_applied == 20
    assert status.framing_errors + status.crc_errors >= 15


class _DeafToFirstConfigs(ControllerSimulator):
    """A controller that misses the first two CONFIG frames (e.g. still booting)."""

    dropped = 0

    def _on_frame(self, frame):
        if frame.type == MsgType.CONFIG and self.dropped < 2:
            self.dropped += 1
            self._last_rx = time.monotonic()
            return
        super()._on_frame(frame)


def test_config_is_retried_with_backoff_until_acknowledged(pty_pair):
    sim = _DeafToFirstConfigs(pty_pair.controller).start()
    try:
        with Link(SerialTransport(pty_pair.path), CONFIG) as link:
            assert link.wait_running(3.0)
            stats = link.stats()
        assert stats["config_sent"] >= 3 and stats["config_acked"] == 1
    finally:
        sim.stop()


def test_version_and_config_refusals_are_reported(tmp_path):
    for kwargs, expected in (({"version_range": (2, 3)}, "UNSUPPORTED_VERSION"), ({"rows": 8}, "BAD_CONFIG")):
        pair = PtyPair(tmp_path / f"tty{expected}")
        sim = ControllerSimulator(pair.controller, **kwargs).start()
        try:
            with Link(SerialTransport(pair.path), CONFIG) as link:
                assert wait_for(lambda: link.stats()["state"] == "rejected")
                stats = link.stats()
                assert expected in stats["nacks"] and stats["last_error"]
                assert not link.running
                # A rejection is not for good: the handshake is tried again after 1 s (then 2, 4, ... 30 s), on
                # the same connection. A controller that refused the version says nothing until then (no
                # heartbeat before a session): that silence is no reason to reconnect, which used to skip the
                # backoff and send HELLO every 0.35 s.
                assert wait_for(lambda: link.stats()["rejections"] >= 2, timeout_s=4.0)
                stats = link.stats()
                assert stats["handshake_retries"] >= 1 and stats["reconnects"] == 0, stats
                assert sim.received[MsgType.HELLO] <= stats["rejections"] + 1
        finally:
            sim.stop()
            pair.close()


def test_a_rejected_link_recovers_when_the_controller_accepts_again(tmp_path):
    pair = PtyPair(tmp_path / "tty")
    sim = ControllerSimulator(pair.controller, version_range=(2, 3)).start()
    try:
        with Link(SerialTransport(pair.path), CONFIG) as link:
            assert wait_for(lambda: link.stats()["state"] == "rejected")
            sim.version_range = (1, 1)  # e.g. the controller's firmware was updated
            assert link.wait_running(4.0), link.stats()
    finally:
        sim.stop()
        pair.close()


def test_udp_link_ignores_datagrams_from_other_addresses():
    """A forged CAPS (version 9) from another local address once put the link in 'rejected' for good."""
    import socket

    from firmware_bridge.protocol import Caps, encode_message

    endpoint = UdpControllerEndpoint(("127.0.0.1", 0))
    sim = ControllerSimulator(endpoint, vsync_hz=0).start()
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        host, port = endpoint.address
        attacker.bind(("127.0.0.5", port))  # same source port as the controller, another address
        with Link(UdpTransport(host, port), CONFIG) as link:
            assert link.wait_running(3.0)
            forged = encode_message(Caps(version=9, fw_major=6, fw_minor=6, fw_patch=6, rows=1, cols=1, max_bits=8,
                                         features=0, max_fps=1, max_payload=16), 0)
            local = link.transport.local_address
            assert local[0] == "127.0.0.1"  # bound by connect() to the interface that reaches the controller
            for frame_id in range(1, 40):
                attacker.sendto(forged, ("127.0.0.1", local[1]))
                link.send_zones(zones(frame_id), frame_id=frame_id)
                time.sleep(0.005)
            assert wait_for(lambda: sim.last_frame_id == 39)
            stats = link.stats()
            assert stats["state"] == "running" and stats["rejections"] == 0
            assert stats["controller"]["version"] == 1
    finally:
        attacker.close()
        sim.stop()
        endpoint.close()


def test_link_close_is_idempotent_and_never_closes_a_reused_descriptor(tmp_path):
    link = Link(SerialTransport(str(tmp_path / "nope")), CONFIG)
    wake_fds = (link._wake_r, link._wake_w)
    link.close()
    path = tmp_path / "other.txt"
    with open(path, "w") as other:  # likely reuses one of the freed descriptor numbers
        link.close()
        other.write("still open")
        other.flush()
        os.fstat(other.fileno())
    assert path.read_text() == "still open"
    assert wake_fds[0] >= 0 and link._wake_r == -1 and link._wake_w == -1
    link.send_zones(zones(1), frame_id=1)  # after close: no write into a stale descriptor, no error


def test_udp_transport_to_a_network_controller():
    endpoint = UdpControllerEndpoint(("127.0.0.1", 0))
    sim = ControllerSimulator(endpoint, vsync_hz=0).start()
    try:
        host, port = endpoint.address
        with Link(UdpTransport(host, port, bind=("127.0.0.1", 0)), CONFIG) as link:
            assert link.wait_running(3.0)
            link.send_zones(zones(9), frame_id=9)
            assert wait_for(lambda: sim.last_frame_id == 9)
        np.testing.assert_array_equal(sim.backlight_u16, zones(9))
    finally:
        sim.stop()
        endpoint.close()


def test_send_zones_validates_its_input():
    link = Link(SerialTransport("/nonexistent/tty"), CONFIG)
    with pytest.raises(ValueError, match=r"shape \(2, 2\) do not match the configured grid \(16, 24\)"):
        link.send_zones(np.zeros((2, 2), np.uint16), 1)
    with pytest.raises(ValueError, match=r"0\.\.4095"):
        link.send_zones(np.full((16, 24), 4096), 1)
    link.close()


def test_missing_port_is_retried_and_reported_without_blocking_the_caller(tmp_path):
    with Link(SerialTransport(str(tmp_path / "never-plugged")), CONFIG) as link:
        for i in range(100):
            link.send_zones(zones(0), frame_id=i)
        assert wait_for(lambda: link.stats()["transport_errors"] >= 2)
        stats = link.stats()
    assert "never-plugged" in stats["last_error"] and "cannot open" in stats["last_error"]
    assert stats["frames_superseded"] == 99 and stats["frames_sent"] == 0


@pytest.mark.skipif(not glob.glob("/dev/spidev*"), reason="no /dev/spidev* device: SPI needs a board with SPI enabled "
                                                          "and a controller on the bus")
def test_spi_transport_opens_the_device():
    dev = sorted(glob.glob("/dev/spidev*"))[0]
    bus, device = dev.removeprefix("/dev/spidev").split(".")
    with SpiTransport(int(bus), int(device)) as spi:
        assert spi.chunk_bytes == SpiTransport.kernel_buffer_size()
        assert isinstance(spi.read(), bytes)


def test_cli_send_streams_to_a_controller_and_reports(pty_pair, controller, capsys):
    import json

    from edgehdr.cli import main

    assert main(["-q", "bridge", "send", pty_pair.path, "--seconds", "0.5", "--fps", "60", "--rows", "8",
                 "--cols", "12", "--pattern", "checker"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["config_acked"] == 1 and stats["frames_sent"] + stats["frames_superseded"] == 30
    assert wait_for(lambda: controller.last_frame_id == 30)
    top = (1 << 12) - 1
    yy, xx = np.mgrid[0:8, 0:12]
    np.testing.assert_array_equal(controller.backlight_u16, ((xx + yy + 30) % 2) * top)


def test_cli_send_to_a_missing_port_fails_cleanly(tmp_path, capsys):
    from edgehdr.cli import main

    assert main(["bridge", "send", str(tmp_path / "ttyNONE"), "--connect-timeout", "0.3"]) == 2
    assert "ttyNONE" in capsys.readouterr().err
    # a UDP port nobody answers on: no transport error to quote, so the message says what was seen
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        port = quiet.getsockname()[1]
        assert main(["bridge", "send", f"udp:127.0.0.1:{port}", "--connect-timeout", "0.3"]) == 2
    err = capsys.readouterr().err
    assert f"udp:127.0.0.1:{port} did not come up: no answer in 0.3 s (protocol state " in err


def test_cli_simulate_refuses_to_replace_a_file_and_cleans_up_on_sigterm(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    from edgehdr.cli import main

    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    assert main(["bridge", "simulate", "--pty", str(precious), "--seconds", "0.1"]) == 2
    assert "refusing to replace" in capsys.readouterr().err and precious.read_text() == "keep me"

    link = tmp_path / "ttyEH"
    proc = subprocess.Popen([sys.executable, "-m", "edgehdr.cli", "bridge", "simulate", "--pty", str(link)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "listening" in proc.stdout.readline()
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert not link.exists() and not link.is_symlink()


def test_simulator_reports_receive_overflow_in_status(pty_pair, controller):
    port = SerialTransport(pty_pair.path)
    port.open()
    try:
        port.write(b"\x55" * 6000 + b"\x00")  # longer than any frame: discarded up to the delimiter
        assert wait_for(lambda: controller.decoder.overflows >= 1)
    finally:
        port.close()
    assert controller.status().faults & 0x2


@pytest.mark.parametrize("argv, named", [
    (["--rows", "300"], "--rows"), (["--rows", "0"], "--rows"), (["--bits", "40"], "--bits"),
    (["--cols", "x"], "--cols"), (["--seconds", "nan"], "--seconds"), (["--vsync-hz", "-1"], "--vsync-hz"),
    (["--udp", "127.0.0.1:70000"], "--udp"),
])
def test_cli_simulate_rejects_impossible_arguments_naming_them(argv, named, capsys):
    """These used to kill the simulator thread at the first HELLO (or loop forever) while the process went on."""
    from edgehdr.cli import main

    try:
        code = main(["bridge", "simulate", *argv, "--pty", "/nonexistent/dir/tty"])
    except SystemExit as exc:  # argparse's own exit
        code = exc.code
    assert code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("kwargs", [{"rows": 300}, {"cols": 0}, {"max_bits": 40}, {"vsync_hz": float("nan")}])
def test_simulator_refuses_a_layout_its_caps_cannot_carry(kwargs, tmp_path):
    pair = PtyPair(tmp_path / "tty")
    try:
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            ControllerSimulator(pair.controller, **kwargs)
    finally:
        pair.close()


def test_test_patterns_cover_the_range_and_change_every_frame():
    from firmware_bridge.patterns import PATTERNS, test_pattern

    for kind in PATTERNS:
        a, b = test_pattern(kind, 9, 16, 12, 1), test_pattern(kind, 9, 16, 12, 2)
        assert a.shape == (9, 16) and a.dtype == np.uint16 and int(a.max()) <= 4095
        assert not np.array_equal(a, b), kind
    ramp = test_pattern("gradient", 9, 16, 12, 0)  # diagonal index 0..23 of a period of 25
    assert ramp.min() == 0 and ramp.max() == 23 * 4095 // 24
    assert test_pattern("gradient", 9, 16, 12, 1).max() == 4095  # full scale one frame later
    checker = test_pattern("checker", 4, 4, 8, 3)
    assert set(np.unique(checker)) == {0, 255} and checker[0, 0] != checker[0, 1]
    with pytest.raises(ValueError, match="unknown test pattern 'stripes'"):
        test_pattern("stripes", 4, 4, 8, 0)


def test_a_transport_failing_in_an_unexpected_way_is_retried_and_counted_not_fatal():
    """A real UDP socket refusing an out-of-range port raises OverflowError, not a TransportError: the link thread
    stays alive, keeps retrying with backoff, and the error shows in its stats (it died with a traceback and
    'last error: none')."""
    link = Link(UdpTransport("127.0.0.1", 99999), CONFIG).start()
    try:
        assert wait_for(lambda: link.stats()["transport_errors"] >= 2, timeout_s=5.0), link.stats()
        stats = link.stats()
        assert stats["last_error"].startswith("OverflowError") and not link.running
        assert link._thread is not None and link._thread.is_alive()
    finally:
        link.close()


def test_link_stats_count_what_it_drops_from_the_controller(pty_pair, controller):
    """Frames of another protocol version and frames whose payload does not parse are dropped and counted
    (``rx_rejected``, ``rx_malformed``), also across a reconnect (the decoder's counters used to restart at 0)."""
    from firmware_bridge.protocol import Heartbeat, encode_frame, encode_message

    with Link(SerialTransport(pty_pair.path), CONFIG) as link:
        assert link.wait_running(3.0)
        for i in range(7):  # the controller's end of the pty: bytes the host reads
            os.write(pty_pair.master_fd, encode_message(Heartbeat(1, State.RUNNING), 900 + i, version=2))
        os.write(pty_pair.master_fd, encode_frame(MsgType.HEARTBEAT, b"\x01", 950))  # a heartbeat is 5 bytes
        assert wait_for(lambda: link.stats()["rx_rejected"] == 7 and link.stats()["rx_malformed"] == 1), link.stats()
        assert link.stats()["state"] == "running"
        link.transport.close()  # a reconnect: the counters carry over
        assert wait_for(lambda: link.stats()["reconnects"] == 1 and link.running)
        assert link.stats()["rx_rejected"] == 7 and link.stats()["rx_malformed"] == 1


def test_simulator_refuses_frames_of_another_version_as_the_firmware_does(pty_pair, tmp_path):
    """As the C firmware: before HELLO only version-1 frames (and HELLO in any version) are read, and a refused
    frame does not feed the watchdog."""
    from firmware_bridge.protocol import Config as ConfigMsg
    from firmware_bridge.protocol import FrameDecoder, Heartbeat, Hello, decode_message, encode_message

    sim = ControllerSimulator(pty_pair.controller, rows=4, cols=4, vsync_hz=0).start()
    host = pty_pair.slave_fd
    os.set_blocking(host, False)

    def replies():
        time.sleep(0.15)
        try:
            data = os.read(host, 65536)
        except BlockingIOError:
            data = b""
        return [type(decode_message(f)).__name__ for f in FrameDecoder(version=None).feed(data)]

    try:
        config = ConfigMsg(rows=4, cols=4, bits=12, watchdog_ms=300, heartbeat_ms=100)
        os.write(host, encode_message(config, 1, version=7))  # no HELLO yet, and not version 1
        assert replies() == [] and sim.state == State.UNCONFIGURED and sim.status().rejected == 1
        os.write(host, encode_message(Hello(), 2) + encode_message(config, 3))
        assert "Ack" in replies() and sim.state == State.RUNNING
        deadline = time.monotonic() + 0.8  # 0.8 s of only version-2 heartbeats, watchdog 300 ms
        while time.monotonic() < deadline:
            os.write(host, encode_message(Heartbeat(1, State.RUNNING), 5, version=2))
            time.sleep(0.03)
        assert sim.state == State.FALLBACK and sim.status().rejected >= 15
    finally:
        sim.stop()


def test_a_host_that_stops_reading_neither_hangs_nor_stops_the_simulator(pty_pair):
    """The host sends requests and never reads the answers (or goes away while the simulator heartbeats): once the
    pty's buffer is full, what is queued is discarded and counted (as a UART's bytes sent to nobody), the simulator
    stays responsive (``stop``/``snapshot`` return; it used to spin in the write holding its lock, and a first fix
    stopped it for good), and a host that comes back gets a working link."""
    from firmware_bridge.protocol import Hello, StatusRequest, encode_message

    sim = ControllerSimulator(pty_pair.controller, rows=48, cols=48, vsync_hz=0).start()
    try:
        burst = encode_message(Hello(), 0) + b"".join(encode_message(StatusRequest(), i) for i in range(1, 4000))
        os.set_blocking(pty_pair.slave_fd, False)
        view = memoryview(burst)
        deadline = time.monotonic() + 10.0
        while view and time.monotonic() < deadline:
            try:
                view = view[os.write(pty_pair.slave_fd, view):]
            except BlockingIOError:
                time.sleep(0.01)
        assert not view
        assert wait_for(lambda: pty_pair.controller.dropped_sends >= 1, timeout_s=10.0)
        assert wait_for(lambda: sim.received[MsgType.STATUS_REQUEST] == 3999, timeout_s=10.0)
        started = time.monotonic()
        assert sim.snapshot()["state"] == "UNCONFIGURED" and time.monotonic() - started < 1.0
        assert sim._thread is not None and sim._thread.is_alive()
        with Link(SerialTransport(pty_pair.path), CONFIG) as link:  # the host comes back
            assert link.wait_running(5.0), link.stats()
            link.send_zones(zones(1), frame_id=1)
            assert wait_for(lambda: sim.last_frame_id == 1)
    finally:
        started = time.monotonic()
        sim.stop()
        assert time.monotonic() - started < 1.0
