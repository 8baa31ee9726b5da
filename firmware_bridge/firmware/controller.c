/*
 * controller.c - the reference display controller on ehlink (portable C99; the board is board.h).
 *
 * Data flow: the link UART's RX interrupt pushes bytes into a ring (controller_rx_byte); the main
 * loop feeds them one at a time to ehl_decoder_feed and acts on each valid message. ZONES are
 * unpacked into the back buffer of a double buffer (latest-wins: a newer frame replaces a pending
 * one); at each vsync tick the pending frame becomes the front buffer and is driven to the LEDs
 * through the drive curve (a 257-entry table built at CONFIG time in fixed point; the host's
 * firmware_bridge/drive.py is the same arithmetic, so it can verify every applied frame from the
 * CRC-32 the board reports). No dynamic allocation; all state is in this file.
 */
#include "controller.h"

#include "../c/ehlink.h"
#include "board.h"

#define ZONES_MAX (CONTROLLER_ROWS * CONTROLLER_COLS)
#define LUT_STEPS 256u
#define FAULT_WATCHDOG 0x0001u
#define FAULT_RX_OVERFLOW 0x0002u
#define FAULT_LED_DRIVER 0x0004u
#define TX_CAP 64u /* the largest reply (STATUS) is 44 bytes on the wire */

/* --------------------------------------------------------------------------------- receive ring */

static volatile uint8_t rx_ring[CONTROLLER_RX_RING];
static volatile uint16_t rx_head; /* written by the interrupt */
static volatile uint16_t rx_tail; /* written by the main loop */
static volatile uint32_t rx_ring_overflows;
static volatile uint32_t vsync_count;

void controller_rx_byte(uint8_t byte)
{
    uint16_t next = (uint16_t)((rx_head + 1u) & (CONTROLLER_RX_RING - 1u));
    if (next == rx_tail) {
        rx_ring_overflows++; /* byte lost: the frame it belongs to fails its CRC and is counted too */
        return;
    }
    rx_ring[rx_head] = byte;
    rx_head = next;
}

void controller_vsync_isr(void) { vsync_count++; }

static int work_pending(void) { return rx_head != rx_tail; }

/* --------------------------------------------------------------------------------- state */

static uint8_t rx_buf[EHL_MAX_ENCODED];
static ehl_decoder_t rx;
static uint8_t tx_buf[TX_CAP];
static uint16_t tx_seq;
static uint8_t version; /* negotiated; 0 until HELLO */

static ehl_config_t config;
static int configured;
static uint8_t state = EHL_STATE_UNCONFIGURED;
static uint16_t frames[2][ZONES_MAX]; /* double buffer: [front] is driven, [1 - front] holds the pending frame */
static unsigned front;
static int pending;
static uint32_t pending_id, pending_vsync;
static int have_last;
static uint32_t last_frame_id;
static uint16_t drive_lut[LUT_STEPS + 1u];

static uint32_t frames_applied, frames_superseded, rejected;
static uint16_t faults;
static uint32_t last_rx_ms, last_tx_ms, last_not_configured_ms;
static int not_configured_sent;

/* --------------------------------------------------------------------------------- drive curve */

/* round(2^(-2^-i) * 2^30), i = 1..16; the same literals are in firmware_bridge/drive.py. */
static const uint32_t exp2_neg_q30[16] = {
    759250125u,  902905651u,  984625594u,  1028218693u, 1050733751u, 1062175491u, 1067942999u, 1070838486u,
    1072289173u, 1073015252u, 1073378477u, 1073560135u, 1073650976u, 1073696399u, 1073719111u, 1073730468u};

/* log2(k) in Q16 for 1 <= k <= 256: integer part from the top bit, fraction by repeated squaring. */
static uint32_t log2_q16(uint32_t k)
{
    uint32_t n = 0, frac = 0, i;
    uint64_t x;
    while ((k >> (n + 1u)) != 0u) {
        n++;
    }
    x = (uint64_t)k << (30u - n);
    for (i = 1; i <= 16u; i++) {
        x = (x * x) >> 30;
        if (x >= ((uint64_t)2u << 30)) {
            x >>= 1;
            frac |= (uint32_t)1u << (16u - i);
        }
    }
    return (n << 16) | frac;
}

/* 2^(-e / 65536) in Q30. */
static uint32_t exp2_neg_q16(uint32_t e)
{
    uint32_t whole = e >> 16, frac = e & 0xFFFFu, i;
    uint64_t r = (uint64_t)1u << 30;
    for (i = 1; i <= 16u; i++) {
        if (frac & ((uint32_t)1u << (16u - i))) {
            r = (r * exp2_neg_q30[i - 1u]) >> 30;
        }
    }
    return whole < 31u ? (uint32_t)(r >> whole) : 0u;
}

static void build_drive_lut(uint16_t gamma_x100)
{
    uint32_t k;
    drive_lut[0] = 0;
    for (k = 1; k <= LUT_STEPS; k++) {
        uint32_t e = (uint32_t)(((uint64_t)((8u << 16) - log2_q16(k)) * gamma_x100) / 100u);
        drive_lut[k] = (uint16_t)(((uint64_t)exp2_neg_q16(e) * 65535u + ((uint64_t)1u << 29)) >> 30);
    }
}

static uint16_t drive(uint16_t level)
{
    uint32_t top = ((uint32_t)1u << config.bits) - 1u;
    uint32_t t, k, f;
    if (config.drive_curve == 0u) {
        return (uint16_t)(((uint32_t)level * 65535u + top / 2u) / top);
    }
    t = (uint32_t)(((uint64_t)level << 24) / top);
    k = t >> 16;
    f = t & 0xFFFFu;
    if (k >= LUT_STEPS) {
        k = LUT_STEPS - 1u;
        f = 65536u;
    }
    return (uint16_t)(drive_lut[k] + (((uint32_t)(drive_lut[k + 1u] - drive_lut[k]) * f + 0x8000u) >> 16));
}

static char *put_hex(char *p, uint32_t v)
{
    int shift;
    for (shift = 28; shift >= 0; shift -= 4) {
        *p++ = "0123456789abcdef"[(v >> shift) & 0xFu];
    }
    return p;
}

/* "A <frame_id> <vsync> <crc32>\n" in hex on the monitor: what the host's bench checks every applied frame by. */
static void monitor_applied(uint32_t frame_id, uint32_t vsync, uint32_t duty_crc32)
{
    char line[32];
    char *p = line;
    *p++ = 'A';
    *p++ = ' ';
    p = put_hex(p, frame_id);
    *p++ = ' ';
    p = put_hex(p, vsync);
    *p++ = ' ';
    p = put_hex(p, duty_crc32);
    *p++ = '\n';
    *p = '\0';
    board_monitor_write(line);
}

/* Drive the front buffer to the LEDs, latch it and report the CRC-32 of the duty values on the monitor. */
static void output_front(uint32_t frame_id)
{
    uint8_t chunk[64];
    size_t used = 0;
    uint32_t crc = 0;
    uint16_t i, n = (uint16_t)(config.rows * config.cols);
    for (i = 0; i < n; i++) {
        uint16_t duty = drive(frames[front][i]);
        board_led_zone(i, duty);
        chunk[used++] = (uint8_t)(duty & 0xFFu);
        chunk[used++] = (uint8_t)(duty >> 8);
        if (used == sizeof chunk) {
            crc = ehl_crc32(crc, chunk, used);
            used = 0;
        }
    }
    crc = ehl_crc32(crc, chunk, used);
    board_led_latch();
    monitor_applied(frame_id, vsync_count, crc);
}

static void fill_safe(void)
{
    uint16_t i, n = (uint16_t)(config.rows * config.cols);
    for (i = 0; i < n; i++) {
        frames[front][i] = config.safe_level;
    }
}

/* --------------------------------------------------------------------------------- replies */

static void send(uint8_t type, uint8_t flags, const uint8_t *payload, size_t length)
{
    size_t n = ehl_encode(tx_buf, sizeof tx_buf, version != 0u ? version : (uint8_t)EHL_PROTOCOL_VERSION, type,
                          flags, tx_seq, payload, (uint16_t)length);
    tx_seq++;
    if (n != 0u) {
        board_link_write(tx_buf, n);
    }
    last_tx_ms = board_millis();
}

static void send_nack(const ehl_msg_t *m, uint8_t reason)
{
    uint8_t p[8];
    size_t n = ehl_build_nack(m->seq, m->type, reason, p, sizeof p);
    send(EHL_NACK, 0, p, n);
}

static void send_ack(const ehl_msg_t *m)
{
    uint8_t p[8];
    size_t n = ehl_build_ack(m->seq, m->type, p, sizeof p);
    send(EHL_ACK, 0, p, n);
}

static void send_status(void)
{
    ehl_status_t st;
    uint8_t p[32];
    size_t n;
    st.frames_applied = frames_applied;
    st.frames_superseded = frames_superseded;
    st.crc_errors = rx.stats.crc_errors;
    st.framing_errors = rx.stats.framing_errors;
    st.rejected = rejected + rx.stats.rejected;
    st.last_frame_id = have_last ? last_frame_id : 0u;
    st.faults = (uint16_t)(faults | ((rx.stats.overflows != 0u || rx_ring_overflows != 0u) ? FAULT_RX_OVERFLOW : 0u) |
                           (board_led_fault() ? FAULT_LED_DRIVER : 0u));
    st.state = state;
    n = ehl_build_status(&st, p, sizeof p);
    send(EHL_STATUS, 0, p, n);
}

/* --------------------------------------------------------------------------------- messages */

static void on_hello(const ehl_msg_t *m)
{
    uint8_t vmin, vmax;
    uint16_t features;
    ehl_caps_t caps;
    uint8_t p[16];
    size_t n;
    if (ehl_parse_hello(m, &vmin, &vmax, &features) != EHL_OK) {
        send_nack(m, EHL_NACK_BAD_LENGTH);
        return;
    }
    (void)features;
    if (vmin > EHL_PROTOCOL_VERSION || vmax < EHL_PROTOCOL_VERSION) {
        send_nack(m, EHL_NACK_UNSUPPORTED_VERSION);
        return;
    }
    version = EHL_PROTOCOL_VERSION; /* the highest version both speak: this firmware speaks 1 only */
    ehl_decoder_set_version(&rx, version);
    caps.version = version;
    caps.fw_major = CONTROLLER_FW_MAJOR;
    caps.fw_minor = CONTROLLER_FW_MINOR;
    caps.fw_patch = CONTROLLER_FW_PATCH;
    caps.rows = CONTROLLER_ROWS;
    caps.cols = CONTROLLER_COLS;
    caps.max_bits = CONTROLLER_MAX_BITS;
    caps.features = EHL_FEATURE_PACKED_ZONES;
    caps.max_fps = CONTROLLER_VSYNC_HZ;
    caps.max_payload = EHL_MAX_PAYLOAD;
    n = ehl_build_caps(&caps, p, sizeof p);
    send(EHL_CAPS, 0, p, n);
}

static void on_config(const ehl_msg_t *m)
{
    ehl_config_t c;
    if (ehl_parse_config(m, &c) != EHL_OK) {
        send_nack(m, EHL_NACK_BAD_LENGTH);
        return;
    }
    if (ehl_config_valid(&c) != EHL_OK || c.rows > CONTROLLER_ROWS || c.cols > CONTROLLER_COLS ||
        c.bits > CONTROLLER_MAX_BITS) {
        send_nack(m, EHL_NACK_BAD_CONFIG);
        return;
    }
    config = c;
    configured = 1;
    if (config.drive_curve == 1u) {
        build_drive_lut(config.drive_gamma_x100);
    }
    pending = 0;
    have_last = 0;
    fill_safe();
    state = EHL_STATE_RUNNING;
    board_monitor_write("C\n");
    output_front(0);
    if (m->flags & EHL_FLAG_ACK_REQUEST) {
        send_ack(m);
    }
}

/* Serial-number arithmetic (RFC 1982) on 32-bit frame ids: is a newer than b? */
static int newer(uint32_t a, uint32_t b) { return a != b && (uint32_t)(a - b) < 0x80000000u; }

static void on_zones(const ehl_msg_t *m)
{
    ehl_zones_head_t head;
    uint32_t frame_id, now;
    unsigned back = 1u - front;
    if (!configured) {
        now = board_millis();
        if (!not_configured_sent || (uint32_t)(now - last_not_configured_ms) >= 1000u) {
            not_configured_sent = 1;
            last_not_configured_ms = now;
            send_nack(m, EHL_NACK_NOT_CONFIGURED);
        }
        return;
    }
    if (ehl_parse_zones_head(m, &head) != EHL_OK) {
        rejected++;
        send_nack(m, EHL_NACK_BAD_LENGTH);
        return;
    }
    if (head.rows != config.rows || head.cols != config.cols || head.bits != config.bits) {
        rejected++;
        send_nack(m, EHL_NACK_ZONE_MISMATCH);
        return;
    }
    frame_id = head.frame_id;
    if ((pending && !newer(frame_id, pending_id)) || (!pending && have_last && !newer(frame_id, last_frame_id))) {
        frames_superseded++; /* stale: older than what we hold */
        return;
    }
    /* ehl_parse_zones validates the whole payload before it writes: a bad frame leaves the pending one intact. */
    if (ehl_parse_zones(m, &head, frames[back], ZONES_MAX) != EHL_OK) {
        rejected++;
        send_nack(m, EHL_NACK_BAD_LENGTH);
        return;
    }
    if (pending) {
        frames_superseded++;
    }
    pending = 1;
    pending_id = head.frame_id;
    pending_vsync = head.present_vsync;
}

static void handle(const ehl_msg_t *m)
{
    last_rx_ms = board_millis();
    switch (m->type) {
    case EHL_HELLO:
        on_hello(m);
        return; /* CAPS is the answer */
    case EHL_CONFIG:
        on_config(m);
        return; /* ACK or NACK sent there */
    case EHL_ZONES:
        on_zones(m);
        return; /* never acknowledged */
    case EHL_STATUS_REQUEST:
        send_status();
        break;
    case EHL_HEARTBEAT:
    case EHL_ACK:
    case EHL_NACK:
    case EHL_CAPS:
    case EHL_STATUS:
        break;
    default:
        rejected++;
        send_nack(m, EHL_NACK_UNKNOWN_TYPE);
        return;
    }
    if (m->flags & EHL_FLAG_ACK_REQUEST) {
        send_ack(m);
    }
}

/* --------------------------------------------------------------------------------- periodic work */

static void on_vsync(uint32_t vs)
{
    if (!pending || (pending_vsync != 0u && pending_vsync > vs)) {
        return;
    }
    front = 1u - front;
    pending = 0;
    have_last = 1;
    last_frame_id = pending_id;
    frames_applied++;
    state = EHL_STATE_RUNNING;
    output_front(last_frame_id);
}

static void watchdog(uint32_t now)
{
    if (!configured || state != EHL_STATE_RUNNING || (uint32_t)(now - last_rx_ms) <= config.watchdog_ms) {
        return;
    }
    state = EHL_STATE_FALLBACK;
    faults |= FAULT_WATCHDOG;
    pending = 0;
    fill_safe();
    board_monitor_write("F\n");
    output_front(0);
}

static void heartbeat(uint32_t now)
{
    uint32_t period = configured ? config.heartbeat_ms : 100u;
    uint8_t p[8];
    size_t n;
    if ((version == 0u && !configured) || (uint32_t)(now - last_tx_ms) < period) {
        return;
    }
    n = ehl_build_heartbeat(now, state, p, sizeof p);
    send(EHL_HEARTBEAT, 0, p, n);
}

void controller_main(void)
{
    uint32_t seen_vsync;
    enum board_reset_cause cause;
    ehl_decoder_init(&rx, rx_buf, sizeof rx_buf);
    board_init();
    cause = board_reset_cause();
    board_monitor_write(cause == BOARD_RESET_POWER_ON ? "B power-on\n"
                        : cause == BOARD_RESET_WATCHDOG ? "B watchdog\n"
                                                        : "B reset\n");
    seen_vsync = vsync_count;
    for (;;) {
        uint32_t now, vs;
        while (rx_tail != rx_head) {
            ehl_msg_t msg;
            uint8_t byte = rx_ring[rx_tail];
            rx_tail = (uint16_t)((rx_tail + 1u) & (CONTROLLER_RX_RING - 1u));
            if (ehl_decoder_feed(&rx, byte, &msg) == EHL_OK) {
                handle(&msg);
            }
        }
        vs = vsync_count;
        if (vs != seen_vsync) {
            seen_vsync = vs;
            on_vsync(vs);
        }
        now = board_millis();
        watchdog(now);
        heartbeat(now);
        board_sleep(work_pending);
    }
}
