/* On-target tests for ehlink: the cases where a 16-bit int or size_t changes the arithmetic (high bytes
 * through get_u16, 2 * heartbeat_ms, 1 << 16, rows * cols * bits), plus version negotiation and a rejected
 * ZONES frame leaving the output untouched. No files, no heap, a few hundred bytes of RAM: it runs on the
 * host (`make test`) and on an AVR ATmega2560 under simavr (`make avr-test`), whose UART prints the result. */
#include "ehlink.h"

#ifdef __AVR__
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>

static void out_char(char c)
{
    while (!(UCSR0A & (1u << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}
static void out_begin(void) { UCSR0B = (uint8_t)(1u << TXEN0); }
static void out_end(void)
{
    cli();
    sleep_mode(); /* simavr stops on sleep with interrupts off */
}
#else
#include <stdio.h>
static void out_char(char c) { putchar(c); }
static void out_begin(void) {}
static void out_end(void) {}
#endif

static unsigned checks, failures;
static uint8_t rx_buf[256];
static uint8_t frame[160];
static ehl_decoder_t dec;

static void out_str(const char *s)
{
    while (*s) {
        out_char(*s++);
    }
}

static void out_uint(unsigned long v)
{
    char digits[12];
    unsigned n = 0;
    do {
        digits[n++] = (char)('0' + (char)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    while (n > 0u) {
        out_char(digits[--n]);
    }
}

static void check(int ok, const char *what)
{
    checks++;
    if (!ok) {
        failures++;
        out_str("FAIL ");
        out_str(what);
        out_char('\n');
    }
}

/* Encode one frame and feed it to the decoder byte by byte; the last feed's result. */
static int round_trip(uint8_t version, uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t length,
                      ehl_msg_t *msg)
{
    size_t n = ehl_encode(frame, sizeof frame, version, type, 0, seq, payload, length), i;
    int rc = EHL_ERR_ARG;
    for (i = 0; i < n; i++) {
        rc = ehl_decoder_feed(&dec, frame[i], msg);
    }
    return n != 0u ? rc : EHL_ERR_ARG;
}

static void test_wire(void)
{
    static const uint8_t digits[] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
    uint8_t hello[EHL_HELLO_SIZE] = {1, 1, 0xFF, 0x80}; /* host_features 0x80FF: high byte >= 0x80 */
    uint8_t status[EHL_STATUS_SIZE];
    uint8_t vmin = 0, vmax = 0;
    uint16_t features = 0;
    ehl_status_t st;
    ehl_msg_t msg;
    check(ehl_crc32(0, digits, sizeof digits) == 0xCBF43926ul, "CRC-32 check value");
    check(round_trip(1, EHL_HELLO, 0xFFFEu, hello, EHL_HELLO_SIZE, &msg) == EHL_OK && msg.seq == 0xFFFEu &&
              msg.length == EHL_HELLO_SIZE,
          "HELLO frame, seq 0xFFFE");
    check(ehl_parse_hello(&msg, &vmin, &vmax, &features) == EHL_OK && features == 0x80FFu && vmax == 1,
          "HELLO features 0x80FF");
    st.frames_applied = 0x80000001ul;
    st.frames_superseded = 0xFFFFFFFFul;
    st.crc_errors = 0x00010000ul;
    st.framing_errors = 1;
    st.rejected = 0x7FFFFFFFul;
    st.last_frame_id = 0xFFFF0000ul;
    st.faults = 0x8001u;
    st.state = EHL_STATE_FALLBACK;
    check(ehl_build_status(&st, status, sizeof status) == EHL_STATUS_SIZE, "STATUS built");
    check(round_trip(1, EHL_STATUS, 0x8000u, status, EHL_STATUS_SIZE, &msg) == EHL_OK && msg.seq == 0x8000u &&
              msg.payload[0] == 0x01 && msg.payload[3] == 0x80 && msg.payload[10] == 0x01 &&
              msg.payload[24] == 0x01 && msg.payload[25] == 0x80 && msg.payload[26] == EHL_STATE_FALLBACK,
          "STATUS bytes little-endian");
}

static void test_config(void)
{
    /* 48x48, 16 bit, power law 2.20, safe 65535, watchdog 65535 ms, heartbeat 40000 ms */
    uint8_t payload[EHL_CONFIG_SIZE] = {48, 48, 16, 1, 220, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x40, 0x9C};
    ehl_config_t cfg;
    ehl_msg_t msg;
    msg.type = EHL_CONFIG;
    msg.length = EHL_CONFIG_SIZE;
    msg.payload = payload;
    check(ehl_parse_config(&msg, &cfg) == EHL_OK && cfg.safe_level == 65535u && cfg.watchdog_ms == 65535u &&
              cfg.heartbeat_ms == 40000u,
          "CONFIG fields above 0x7FFF");
    check(ehl_config_valid(&cfg) == EHL_ERR_ARG, "2 * heartbeat 40000 >= watchdog 65535 (no 16-bit wrap)");
    cfg.heartbeat_ms = 32767u;
    check(ehl_config_valid(&cfg) == EHL_OK, "16-bit safe level 65535, heartbeat 32767 ms valid");
    cfg.bits = 8;
    cfg.safe_level = 256;
    check(ehl_config_valid(&cfg) == EHL_ERR_ARG, "safe level 256 at 8 bits refused");
    cfg.bits = 16;
    cfg.rows = 255;
    cfg.cols = 255;
    check(ehl_config_valid(&cfg) == EHL_ERR_ARG, "255x255x16 does not fit a payload");
}

static void test_zones(void)
{
    uint16_t values[6] = {0xFFFFu, 0x8000u, 0x7FFFu, 0, 1, 0x1234u}, out[7];
    uint8_t payload[EHL_ZONES_HEAD_SIZE + 12];
    ehl_zones_head_t head, got;
    ehl_msg_t msg;
    size_t n, i;
    int untouched;
    head.frame_id = 0xDEADBEEFul;
    head.present_vsync = 0x80000000ul;
    head.rows = 2;
    head.cols = 3;
    head.bits = 16;
    head.encoding = EHL_ENCODING_RAW;
    n = ehl_build_zones(&head, values, payload, sizeof payload);
    msg.type = EHL_ZONES;
    msg.length = (uint16_t)n;
    msg.payload = payload;
    check(n == EHL_ZONES_HEAD_SIZE + 12u && ehl_parse_zones(&msg, &got, out, 6) == EHL_OK &&
              got.frame_id == 0xDEADBEEFul && got.present_vsync == 0x80000000ul && out[0] == 0xFFFFu &&
              out[1] == 0x8000u && out[5] == 0x1234u,
          "16-bit raw zones round trip");
    head.bits = 12;
    head.encoding = EHL_ENCODING_PACKED;
    for (i = 0; i < 6; i++) {
        values[i] = (uint16_t)(values[i] & 0x0FFFu);
    }
    n = ehl_build_zones(&head, values, payload, sizeof payload);
    msg.length = (uint16_t)n;
    check(n == EHL_ZONES_HEAD_SIZE + 9u && ehl_parse_zones(&msg, &got, out, 6) == EHL_OK && out[0] == 0x0FFFu &&
              out[2] == 0x0FFFu && out[5] == 0x0234u,
          "12-bit packed zones round trip");
    /* 15-bit raw with one value of 16 bits: refused, output untouched. */
    head.bits = 15;
    head.encoding = EHL_ENCODING_RAW;
    n = ehl_build_zones(&head, values, payload, sizeof payload);
    payload[EHL_ZONES_HEAD_SIZE + 11] = 0x80;
    msg.length = (uint16_t)n;
    for (i = 0; i < 7; i++) {
        out[i] = 0xA5A5u;
    }
    check(ehl_parse_zones(&msg, &got, out, 6) == EHL_ERR_ARG, "over-wide 15-bit value refused");
    for (i = 0, untouched = 1; i < 7; i++) {
        untouched = untouched && out[i] == 0xA5A5u;
    }
    check(untouched, "rejected ZONES frame leaves the values untouched");
    /* 255x255x16 packed: 130050 data bytes; in a 16-bit size_t the product wraps to a length of 7182. */
    payload[8] = 255;
    payload[9] = 255;
    payload[10] = 16;
    payload[11] = EHL_ENCODING_PACKED;
    msg.length = 7182;
    check(ehl_parse_zones(&msg, &got, out, 65535u) == EHL_ERR_ARG && out[0] == 0xA5A5u,
          "255x255x16 size computed without wrapping");
}

static void test_versions(void)
{
    uint8_t hello[EHL_HELLO_SIZE] = {2, 2, 0, 0};
    uint8_t zones[EHL_ZONES_HEAD_SIZE + 1] = {1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 8, 0, 200};
    ehl_msg_t msg;
    ehl_decoder_init(&dec, rx_buf, sizeof rx_buf);
    check(round_trip(2, EHL_HELLO, 1, hello, EHL_HELLO_SIZE, &msg) == EHL_OK && msg.version == 2,
          "version-2 HELLO delivered");
    check(round_trip(2, EHL_ZONES, 2, zones, sizeof zones, &msg) == EHL_ERR_VERSION && dec.stats.rejected == 1,
          "version-2 ZONES rejected and counted");
    check(round_trip(1, EHL_ZONES, 3, zones, sizeof zones, &msg) == EHL_OK && dec.stats.frames == 2,
          "version-1 ZONES delivered");
}

int main(void)
{
    out_begin();
    ehl_decoder_init(&dec, rx_buf, sizeof rx_buf);
    test_wire();
    test_config();
    test_zones();
    test_versions();
    out_str("ehlink target test (int of ");
    out_uint((unsigned long)sizeof(int) * 8u);
    out_str(" bits): ");
    out_uint(checks);
    out_str(" checks, ");
    out_uint(failures);
    out_str(" failures\n");
    out_end();
    return failures != 0u;
}
