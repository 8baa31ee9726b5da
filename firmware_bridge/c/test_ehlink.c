/* Host tests for ehlink: shared vectors from the Python side, stream counters, randomised fuzzing.
 * Usage: test_ehlink VECTOR_DIR [fuzz_iterations]. Exit status 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ehlink.h"

#define LINE_MAX_BYTES (1u << 17)

static char line[LINE_MAX_BYTES];
static uint8_t bytes_a[LINE_MAX_BYTES / 2];
static uint8_t bytes_b[LINE_MAX_BYTES / 2];
static uint8_t rx_buf[EHL_MAX_ENCODED];
static uint8_t tx_buf[EHL_MAX_ENCODED + 1];
static uint16_t values_a[48 * 48 * 4];
static uint16_t values_b[48 * 48 * 4];

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                                                                       \
    do {                                                                                                       \
        checks++;                                                                                              \
        if (!(cond)) {                                                                                         \
            failures++;                                                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                               \
            fprintf(stderr, __VA_ARGS__);                                                                      \
            fputc('\n', stderr);                                                                               \
        }                                                                                                      \
    } while (0)

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Hex string ("-" = empty) to bytes; returns length or -1. */
static long unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    if (strcmp(s, "-") == 0) return 0;
    while (s[0] && s[1]) {
        int hi = hexval(s[0]), lo = hexval(s[1]);
        if (hi < 0 || lo < 0 || n >= cap) return -1;
        out[n++] = (uint8_t)(hi * 16 + lo);
        s += 2;
    }
    return s[0] ? -1 : (long)n;
}

static FILE *open_vectors(const char *dir, const char *name)
{
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "r");
    if (!f) fprintf(stderr, "cannot open %s\n", path);
    return f;
}

/* Split line in place into at most max fields; returns count. */
static int split(char *s, char **fields, int max)
{
    int n = 0;
    char *tok = strtok(s, " \n\r");
    while (tok && n < max) {
        fields[n++] = tok;
        tok = strtok(NULL, " \n\r");
    }
    return n;
}

/* Feed a whole buffer; returns number of EHL_OK frames, last one in *last. */
static int feed_all(ehl_decoder_t *d, const uint8_t *data, size_t len, ehl_msg_t *last)
{
    int ok = 0;
    size_t i;
    ehl_msg_t msg;
    for (i = 0; i < len; i++) {
        if (ehl_decoder_feed(d, data[i], &msg) == EHL_OK) {
            ok++;
            if (last) *last = msg;
        }
    }
    return ok;
}

static void test_crc(void)
{
    const uint8_t check[] = "123456789";
    CHECK(ehl_crc32(0, check, 9) == 0xCBF43926u, "CRC-32 check value: got %08lx", (unsigned long)ehl_crc32(0, check, 9));
    CHECK(ehl_crc32(ehl_crc32(0, check, 4), check + 4, 5) == 0xCBF43926u, "CRC-32 chaining");
}

static void test_frames(const char *dir)
{
    FILE *f = open_vectors(dir, "frames.txt");
    int count = 0;
    CHECK(f != NULL, "frames.txt present");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char *fld[8];
        long plen, flen;
        unsigned version, type, flags, seq;
        ehl_decoder_t d;
        ehl_msg_t msg;
        size_t n;
        if (line[0] == '#' || split(line, fld, 8) != 7) continue;
        version = (unsigned)strtoul(fld[1], NULL, 10);
        type = (unsigned)strtoul(fld[2], NULL, 10);
        flags = (unsigned)strtoul(fld[3], NULL, 10);
        seq = (unsigned)strtoul(fld[4], NULL, 10);
        plen = unhex(fld[5], bytes_a, sizeof bytes_a);
        flen = unhex(fld[6], bytes_b, sizeof bytes_b);
        CHECK(plen >= 0 && flen > 0, "%s: hex fields parse", fld[0]);
        if (plen < 0 || flen <= 0) continue;
        ehl_decoder_init(&d, rx_buf, sizeof rx_buf);
        CHECK(feed_all(&d, bytes_b, (size_t)flen, &msg) == 1, "%s: decodes to exactly one frame", fld[0]);
        CHECK(msg.version == version && msg.type == type && msg.flags == flags && msg.seq == seq,
              "%s: header fields", fld[0]);
        CHECK(msg.length == plen && (plen == 0 || memcmp(msg.payload, bytes_a, (size_t)plen) == 0),
              "%s: payload bytes", fld[0]);
        n = ehl_encode(tx_buf, sizeof tx_buf, (uint8_t)version, (uint8_t)type, (uint8_t)flags, (uint16_t)seq,
                       plen ? bytes_a : NULL, (uint16_t)plen);
        CHECK(n == (size_t)flen && memcmp(tx_buf, bytes_b, n) == 0, "%s: C encoder reproduces the Python bytes",
              fld[0]);
        count++;
    }
    fclose(f);
    CHECK(count >= 15, "frames.txt holds the expected vectors (%d)", count);
}

static void test_zones(const char *dir)
{
    FILE *f = open_vectors(dir, "zones.txt");
    int count = 0;
    CHECK(f != NULL, "zones.txt present");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char *fld[8];
        char *tok;
        size_t nvals = 0, n;
        long plen;
        ehl_msg_t msg;
        ehl_zones_head_t head;
        if (line[0] == '#' || split(line, fld, 8) != 7) continue;
        for (tok = strtok(fld[5], ","); tok && nvals < sizeof values_a / sizeof values_a[0]; tok = strtok(NULL, ","))
            values_a[nvals++] = (uint16_t)strtoul(tok, NULL, 10);
        plen = unhex(fld[6], bytes_a, sizeof bytes_a);
        CHECK(plen > 0, "%s: payload hex", fld[0]);
        if (plen <= 0) continue;
        msg.type = EHL_ZONES;
        msg.length = (uint16_t)plen;
        msg.payload = bytes_a;
        CHECK(ehl_parse_zones(&msg, &head, values_b, sizeof values_b / sizeof values_b[0]) == EHL_OK,
              "%s: parses", fld[0]);
        CHECK(head.rows == strtoul(fld[1], NULL, 10) && head.cols == strtoul(fld[2], NULL, 10) &&
                  head.bits == strtoul(fld[3], NULL, 10) && head.encoding == strtoul(fld[4], NULL, 10),
              "%s: head", fld[0]);
        CHECK(nvals == (size_t)head.rows * head.cols && memcmp(values_a, values_b, nvals * 2) == 0,
              "%s: zone values", fld[0]);
        n = ehl_build_zones(&head, values_a, bytes_b, sizeof bytes_b);
        CHECK(n == (size_t)plen && memcmp(bytes_a, bytes_b, n) == 0, "%s: C packer reproduces the Python bytes",
              fld[0]);
        {
            ehl_zones_head_t only;
            CHECK(ehl_parse_zones_head(&msg, &only) == EHL_OK && only.frame_id == head.frame_id &&
                      only.present_vsync == head.present_vsync && only.rows == head.rows && only.cols == head.cols &&
                      only.bits == head.bits && only.encoding == head.encoding,
                  "%s: head alone = head of the full parse", fld[0]);
        }
        /* One byte short or long must be refused. */
        msg.length = (uint16_t)(plen - 1);
        CHECK(ehl_parse_zones(&msg, &head, values_b, sizeof values_b / sizeof values_b[0]) == EHL_ERR_ARG,
              "%s: short payload refused", fld[0]);
        msg.length = (uint16_t)plen;
        CHECK(ehl_parse_zones(&msg, &head, values_b, 1) == EHL_ERR_ARG || head.rows * head.cols == 1,
              "%s: too small output refused", fld[0]);
        count++;
    }
    fclose(f);
    CHECK(count >= 8, "zones.txt holds the expected vectors (%d)", count);
}

static void test_streams(const char *dir)
{
    FILE *f = open_vectors(dir, "streams.txt");
    int count = 0;
    CHECK(f != NULL, "streams.txt present");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char *fld[8];
        long len;
        int frames;
        ehl_decoder_t d;
        if (line[0] == '#' || split(line, fld, 8) != 7) continue;
        len = unhex(fld[6], bytes_a, sizeof bytes_a);
        CHECK(len > 0, "%s: stream hex", fld[0]);
        if (len <= 0) continue;
        ehl_decoder_init(&d, rx_buf, sizeof rx_buf);
        frames = feed_all(&d, bytes_a, (size_t)len, NULL);
        CHECK(frames == atoi(fld[1]) && d.stats.frames == (uint32_t)atoi(fld[1]), "%s: frames %d", fld[0], frames);
        CHECK(d.stats.crc_errors == strtoul(fld[2], NULL, 10), "%s: crc_errors %lu", fld[0],
              (unsigned long)d.stats.crc_errors);
        CHECK(d.stats.framing_errors == strtoul(fld[3], NULL, 10), "%s: framing_errors %lu", fld[0],
              (unsigned long)d.stats.framing_errors);
        CHECK(d.stats.overflows == strtoul(fld[4], NULL, 10), "%s: overflows", fld[0]);
        CHECK(d.stats.rejected == strtoul(fld[5], NULL, 10), "%s: rejected", fld[0]);
        count++;
    }
    fclose(f);
    CHECK(count >= 9, "streams.txt holds the expected vectors (%d)", count);
}

static void test_config_and_bounds(void)
{
    uint8_t payload[EHL_CONFIG_SIZE] = {48, 48, 12, 1, 220, 0, 0, 2, 0xF4, 0x01, 100, 0};
    ehl_msg_t msg;
    ehl_config_t cfg;
    msg.type = EHL_CONFIG;
    msg.length = EHL_CONFIG_SIZE;
    msg.payload = payload;
    CHECK(ehl_parse_config(&msg, &cfg) == EHL_OK && ehl_config_valid(&cfg) == EHL_OK, "valid config");
    CHECK(cfg.safe_level == 512 && cfg.watchdog_ms == 500 && cfg.heartbeat_ms == 100, "config fields");
    cfg.safe_level = 4096;
    CHECK(ehl_config_valid(&cfg) == EHL_ERR_ARG, "safe level above 12 bits refused");
    cfg.safe_level = 0;
    cfg.heartbeat_ms = 300;
    CHECK(ehl_config_valid(&cfg) == EHL_ERR_ARG, "heartbeat >= watchdog/2 refused");
    cfg.heartbeat_ms = 40000; /* 2 * 40000 wraps to 14464 in a 16-bit unsigned */
    cfg.watchdog_ms = 65535;
    CHECK(ehl_config_valid(&cfg) == EHL_ERR_ARG, "heartbeat 40000 ms >= watchdog 65535 ms / 2 refused");
    cfg.heartbeat_ms = 32767;
    CHECK(ehl_config_valid(&cfg) == EHL_OK, "heartbeat 32767 ms < watchdog 65535 ms / 2 accepted");
    cfg.bits = 16;
    cfg.safe_level = 65535;
    CHECK(ehl_config_valid(&cfg) == EHL_OK, "16-bit safe level 65535 accepted");
    cfg.bits = 17;
    CHECK(ehl_config_valid(&cfg) == EHL_ERR_ARG, "17 bits refused");
    cfg.bits = 8;
    cfg.safe_level = 256;
    CHECK(ehl_config_valid(&cfg) == EHL_ERR_ARG, "safe level 256 at 8 bits refused");
    msg.length = EHL_CONFIG_SIZE - 1;
    CHECK(ehl_parse_config(&msg, &cfg) == EHL_ERR_ARG, "short config refused");
    msg.type = EHL_ZONES;
    msg.length = EHL_CONFIG_SIZE;
    CHECK(ehl_parse_config(&msg, &cfg) == EHL_ERR_ARG, "CONFIG parser refuses another type");
    CHECK(ehl_encode(tx_buf, 8, 1, EHL_HELLO, 0, 0, payload, EHL_HELLO_SIZE) == 0, "too small output refused");
    CHECK(ehl_encode(tx_buf, sizeof tx_buf, 1, EHL_ZONES, 0, 0, bytes_a, EHL_MAX_PAYLOAD + 1) == 0,
          "oversize payload refused");
}

/* A rejected ZONES frame must leave head and values as they were: the controller keeps showing its last
 * good frame. The over-wide value sits last, so a parser that unpacks before it checks would have written
 * every other zone. */
static void test_zones_rejected_leave_output_untouched(void)
{
    enum { ROWS = 3, COLS = 4, ZONES = ROWS * COLS };
    const uint16_t sentinel = 0xA5A5u;
    uint16_t values[ZONES], out[ZONES + 1];
    uint8_t payload[EHL_ZONES_HEAD_SIZE + 2 * ZONES];
    ehl_zones_head_t head, got;
    ehl_msg_t msg;
    size_t i, n;
    head.frame_id = 7;
    head.present_vsync = 0;
    head.rows = ROWS;
    head.cols = COLS;
    head.bits = 12;
    head.encoding = EHL_ENCODING_RAW;
    for (i = 0; i < ZONES; i++) values[i] = (uint16_t)(i * 300u);
    n = ehl_build_zones(&head, values, payload, sizeof payload);
    CHECK(n == sizeof payload, "12-bit raw zones: %lu bytes", (unsigned long)n);
    payload[EHL_ZONES_HEAD_SIZE + 2 * (ZONES - 1) + 1] = 0x10; /* last zone = 0x10xx: 13 bits */
    msg.type = EHL_ZONES;
    msg.length = (uint16_t)n;
    msg.payload = payload;
    for (i = 0; i < ZONES + 1; i++) out[i] = sentinel;
    memset(&got, 0x5A, sizeof got);
    CHECK(ehl_parse_zones(&msg, &got, out, ZONES) == EHL_ERR_ARG, "over-wide raw value refused");
    i = 0;
    while (i < ZONES + 1 && out[i] == sentinel) i++;
    CHECK(i == ZONES + 1, "rejected frame left values untouched (zone %lu written)", (unsigned long)i);
    CHECK(got.frame_id == 0x5A5A5A5Au && got.rows == 0x5A, "rejected frame left head untouched");
    /* Wrong length, bad head, grid larger than the output: untouched too. */
    payload[EHL_ZONES_HEAD_SIZE + 2 * (ZONES - 1) + 1] = 0x0F;
    msg.length = (uint16_t)(n - 1);
    CHECK(ehl_parse_zones(&msg, &got, out, ZONES) == EHL_ERR_ARG && out[0] == sentinel, "short frame refused");
    msg.length = (uint16_t)n;
    CHECK(ehl_parse_zones(&msg, &got, out, ZONES - 1) == EHL_ERR_ARG && out[0] == sentinel, "grid > max_values");
    payload[10] = 17;
    CHECK(ehl_parse_zones(&msg, &got, out, ZONES) == EHL_ERR_ARG && out[0] == sentinel, "17 bits refused");
    payload[10] = 12;
    CHECK(ehl_parse_zones(&msg, &got, out, ZONES) == EHL_OK && got.rows == ROWS && out[ZONES] == sentinel &&
              out[ZONES - 1] == 0x0F00u + (uint16_t)(((ZONES - 1) * 300u) & 0xFFu) && out[1] == 300,
          "repaired frame parses, nothing written past rows*cols");
    /* The builder refuses what the parser would refuse. */
    values[3] = 4096;
    CHECK(ehl_build_zones(&head, values, payload, sizeof payload) == 0, "builder refuses a 13-bit value at 12 bits");
    head.encoding = EHL_ENCODING_PACKED;
    CHECK(ehl_build_zones(&head, values, payload, sizeof payload) == 0, "packed builder refuses it too");
    values[3] = 4095;
    n = ehl_build_zones(&head, values, payload, sizeof payload);
    CHECK(n == EHL_ZONES_HEAD_SIZE + (ZONES * 12 + 7) / 8, "packed 12-bit size");
    msg.length = (uint16_t)n;
    CHECK(ehl_parse_zones(&msg, &got, out, ZONES) == EHL_OK && memcmp(out, values, sizeof values) == 0,
          "packed round trip");
}

/* A controller must see a HELLO of any version to answer CAPS or NACK(unsupported version); every
 * other type of a version it does not speak is rejected and counted. */
static void test_version_negotiation(void)
{
    uint8_t hello[EHL_HELLO_SIZE] = {2, 3, 0x01, 0x00};
    uint8_t zones[EHL_ZONES_HEAD_SIZE + 1] = {1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 8, 0, 200};
    uint8_t frame[64];
    uint8_t vmin = 0, vmax = 0;
    uint16_t features = 0;
    size_t n, i;
    int rc = EHL_NEED_MORE;
    ehl_decoder_t d;
    ehl_msg_t msg;
    ehl_decoder_init(&d, rx_buf, sizeof rx_buf);

    n = ehl_encode(frame, sizeof frame, 2, EHL_HELLO, 0, 11, hello, EHL_HELLO_SIZE);
    for (i = 0; i < n; i++) rc = ehl_decoder_feed(&d, frame[i], &msg);
    CHECK(rc == EHL_OK && msg.type == EHL_HELLO && msg.version == 2 && msg.seq == 11, "version-2 HELLO delivered");
    CHECK(rc == EHL_OK && ehl_parse_hello(&msg, &vmin, &vmax, &features) == EHL_OK && vmin == 2 && vmax == 3 &&
              features == 1,
          "version-2 HELLO parses");
    CHECK(d.stats.frames == 1 && d.stats.rejected == 0, "HELLO counted as a frame");

    n = ehl_encode(frame, sizeof frame, 2, EHL_ZONES, 0, 12, zones, sizeof zones);
    for (i = 0; i < n; i++) rc = ehl_decoder_feed(&d, frame[i], &msg);
    CHECK(rc == EHL_ERR_VERSION && d.stats.rejected == 1 && d.stats.frames == 1, "version-2 ZONES rejected");

    n = ehl_encode(frame, sizeof frame, 1, EHL_ZONES, 0, 13, zones, sizeof zones);
    for (i = 0; i < n; i++) rc = ehl_decoder_feed(&d, frame[i], &msg);
    CHECK(rc == EHL_OK && msg.type == EHL_ZONES && msg.version == 1, "version-1 ZONES delivered");

    /* After negotiating version 2: version-1 frames are rejected, a version-1 HELLO (a host
     * reconnecting) still passes. */
    ehl_decoder_set_version(&d, 2);
    for (i = 0; i < n; i++) rc = ehl_decoder_feed(&d, frame[i], &msg);
    CHECK(rc == EHL_ERR_VERSION && d.stats.rejected == 2, "version-1 ZONES rejected at version 2");
    n = ehl_encode(frame, sizeof frame, 1, EHL_HELLO, 0, 14, hello, EHL_HELLO_SIZE);
    for (i = 0; i < n; i++) rc = ehl_decoder_feed(&d, frame[i], &msg);
    CHECK(rc == EHL_OK && msg.version == 1 && msg.type == EHL_HELLO, "version-1 HELLO delivered at version 2");
    ehl_decoder_set_version(&d, 0);
    n = ehl_encode(frame, sizeof frame, 9, EHL_ZONES, 0, 15, zones, sizeof zones);
    for (i = 0; i < n; i++) rc = ehl_decoder_feed(&d, frame[i], &msg);
    CHECK(rc == EHL_OK && msg.version == 9, "version 0 accepts any version");
}

/* Builders return their EHL_*_SIZE, or 0 (never a partial length) when the output is too small. */
static void test_builders_and_error_convention(void)
{
    uint8_t out[EHL_STATUS_SIZE + 1];
    ehl_caps_t caps;
    ehl_status_t st;
    ehl_msg_t msg;
    uint8_t vmin, vmax;
    uint16_t features;
    memset(&caps, 1, sizeof caps);
    memset(&st, 2, sizeof st);
    CHECK(ehl_build_caps(&caps, out, sizeof out) == EHL_CAPS_SIZE, "CAPS size");
    CHECK(ehl_build_caps(&caps, out, EHL_CAPS_SIZE - 1) == 0, "CAPS: no room is 0");
    CHECK(ehl_build_ack(1, EHL_CONFIG, out, sizeof out) == EHL_ACK_SIZE && out[3] == 0, "ACK size, reason 0");
    CHECK(ehl_build_ack(1, EHL_CONFIG, out, EHL_ACK_SIZE - 1) == 0, "ACK: no room is 0");
    CHECK(ehl_build_nack(0x1234, EHL_ZONES, EHL_NACK_ZONE_MISMATCH, out, sizeof out) == EHL_NACK_SIZE &&
              out[0] == 0x34 && out[1] == 0x12 && out[2] == EHL_ZONES && out[3] == EHL_NACK_ZONE_MISMATCH,
          "NACK layout");
    CHECK(ehl_build_heartbeat(0x80FF0102u, EHL_STATE_FALLBACK, out, sizeof out) == EHL_HEARTBEAT_SIZE &&
              out[0] == 0x02 && out[3] == 0x80 && out[4] == EHL_STATE_FALLBACK,
          "HEARTBEAT layout");
    CHECK(ehl_build_heartbeat(0, 0, out, EHL_HEARTBEAT_SIZE - 1) == 0, "HEARTBEAT: no room is 0");
    CHECK(ehl_build_status(&st, out, sizeof out) == EHL_STATUS_SIZE, "STATUS size");
    CHECK(ehl_build_status(&st, out, EHL_STATUS_SIZE - 1) == 0, "STATUS: no room is 0");
    CHECK(ehl_build_status(&st, NULL, sizeof out) == 0, "STATUS: NULL output is 0");
    out[0] = 1;
    out[1] = 1;
    out[2] = 0xFF; /* features 0x80FF: the high byte must not go through a signed 16-bit int */
    out[3] = 0x80;
    msg.type = EHL_HELLO;
    msg.length = EHL_HELLO_SIZE;
    msg.payload = out;
    CHECK(ehl_parse_hello(&msg, &vmin, &vmax, &features) == EHL_OK && features == 0x80FFu, "HELLO features");
    msg.length = EHL_HELLO_SIZE + 1;
    vmin = 77;
    CHECK(ehl_parse_hello(&msg, &vmin, &vmax, &features) == EHL_ERR_ARG && vmin == 77, "long HELLO refused");
    CHECK(ehl_parse_hello(NULL, &vmin, &vmax, &features) == EHL_ERR_ARG, "NULL message refused");
}

/* xorshift64*: local state, deterministic. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void test_fuzz(long iterations)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint8_t payload[600];
    uint8_t frame[EHL_MAX_ENCODED + 1];
    uint8_t original[EHL_MAX_ENCODED + 1];
    uint8_t good[64];
    size_t good_len, i;
    long it, accepted_corrupt = 0, resync_failures = 0, garbage_frames = 0;
    ehl_decoder_t d;
    ehl_msg_t msg;
    uint8_t hb[EHL_HEARTBEAT_SIZE];
    ehl_build_heartbeat(77, EHL_STATE_RUNNING, hb, sizeof hb);
    good_len = ehl_encode(good, sizeof good, 1, EHL_HEARTBEAT, 0, 7, hb, EHL_HEARTBEAT_SIZE);
    ehl_decoder_init(&d, rx_buf, sizeof rx_buf);
    for (it = 0; it < iterations; it++) {
        size_t plen = (size_t)(next_rand(&rng) % sizeof payload), flen;
        int mode = (int)(next_rand(&rng) % 5), ok = 0;
        for (i = 0; i < plen; i++) payload[i] = (uint8_t)next_rand(&rng);
        size_t orig_len;
        flen = ehl_encode(frame, sizeof frame, 1, (uint8_t)(1 + next_rand(&rng) % 9), 0, (uint16_t)it, payload,
                          (uint16_t)plen);
        orig_len = flen;
        memcpy(original, frame, flen);
        if (mode == 0) { /* pure garbage, any length */
            flen = (size_t)(next_rand(&rng) % 800);
            for (i = 0; i < flen; i++) frame[i] = (uint8_t)next_rand(&rng);
        } else if (mode == 1) { /* 1-4 bit flips anywhere before the delimiter */
            int flips = 1 + (int)(next_rand(&rng) % 4), k;
            for (k = 0; k < flips; k++) frame[next_rand(&rng) % (flen - 1)] ^= (uint8_t)(1u << (next_rand(&rng) % 8));
        } else if (mode == 2) { /* truncation */
            flen = (size_t)(next_rand(&rng) % (flen - 1));
        } else if (mode == 3) { /* oversize: a long run without delimiter */
            size_t extra = EHL_MAX_ENCODED + (size_t)(next_rand(&rng) % 300);
            for (i = 0; i < extra; i++) {
                if (ehl_decoder_feed(&d, (uint8_t)(1 + next_rand(&rng) % 255), &msg) == EHL_OK) garbage_frames++;
            }
            flen = 0;
        } else { /* corrupted length field: rewrite header length, keep CRC */
            uint8_t raw[EHL_MAX_FRAME];
            size_t n = 0;
            if (ehl_cobs_decode(frame, flen - 1, raw, sizeof raw, &n) == EHL_OK &&
                n >= EHL_HEADER_SIZE + EHL_CRC_SIZE) {
                raw[8] ^= (uint8_t)(1 + next_rand(&rng) % 255);
                flen = ehl_cobs_encode(raw, n, frame, sizeof frame - 1);
                frame[flen++] = 0;
            }
        }
        for (i = 0; i < flen; i++) {
            if (ehl_decoder_feed(&d, frame[i], &msg) == EHL_OK) ok++;
        }
        /* Two flips of the same bit leave the frame intact: only a changed frame counts as corrupt. */
        if (mode != 0 && ok && (flen != orig_len || memcmp(frame, original, flen) != 0)) accepted_corrupt++;
        if (mode == 0 && ok) garbage_frames++;
        /* A delimiter then a good frame: the decoder must be back in sync. */
        ehl_decoder_feed(&d, 0, &msg);
        if (feed_all(&d, good, good_len, &msg) != 1 || msg.seq != 7 || msg.length != EHL_HEARTBEAT_SIZE ||
            memcmp(msg.payload, hb, EHL_HEARTBEAT_SIZE) != 0) {
            resync_failures++;
        }
    }
    CHECK(accepted_corrupt == 0, "corrupted frames accepted: %ld of %ld", accepted_corrupt, iterations);
    CHECK(garbage_frames == 0, "frames decoded out of random garbage: %ld", garbage_frames);
    CHECK(resync_failures == 0, "resynchronisation failures: %ld", resync_failures);
    CHECK(d.stats.crc_errors + d.stats.framing_errors > (uint32_t)(iterations / 2),
          "corrupted frames are counted (%lu crc, %lu framing)", (unsigned long)d.stats.crc_errors,
          (unsigned long)d.stats.framing_errors);
    printf("fuzz: %ld iterations, %lu crc errors, %lu framing errors (%lu overflows), 0 crashes\n", iterations,
           (unsigned long)d.stats.crc_errors, (unsigned long)d.stats.framing_errors,
           (unsigned long)d.stats.overflows);
}

static void test_cobs_round_trip(void)
{
    uint64_t rng = 12345;
    int it;
    for (it = 0; it < 2000; it++) {
        size_t len = (size_t)(next_rand(&rng) % 1200), i, e, dlen;
        for (i = 0; i < len; i++) bytes_a[i] = (uint8_t)(next_rand(&rng) % 4 == 0 ? 0 : next_rand(&rng));
        e = ehl_cobs_encode(bytes_a, len, bytes_b, sizeof bytes_b);
        for (i = 0; i < e; i++) {
            if (bytes_b[i] == 0) break;
        }
        CHECK(e > 0 && i == e, "COBS output holds no zero byte");
        dlen = 0;
        CHECK(ehl_cobs_decode(bytes_b, e, bytes_b, sizeof bytes_b, &dlen) == EHL_OK, "COBS decodes"); /* in place */
        CHECK(dlen == len && memcmp(bytes_a, bytes_b, len) == 0, "COBS round trip of %lu bytes", (unsigned long)len);
    }
    {
        const uint8_t zero_inside[] = {0x03, 0x11, 0x00, 0x22};
        const uint8_t two_bytes[] = {0x03, 0x11, 0x22};
        uint8_t out[4];
        size_t dlen = 99;
        CHECK(ehl_cobs_decode(zero_inside, sizeof zero_inside, out, sizeof out, &dlen) == EHL_ERR_FRAMING && dlen == 99,
              "COBS: a zero inside a block is malformed, *out_len untouched");
        CHECK(ehl_cobs_decode(two_bytes, 2, out, sizeof out, &dlen) == EHL_ERR_FRAMING, "COBS: truncated block");
        CHECK(ehl_cobs_decode(two_bytes, sizeof two_bytes, out, 1, &dlen) == EHL_ERR_SPACE && dlen == 99,
              "COBS: output too small is EHL_ERR_SPACE");
        CHECK(ehl_cobs_decode(two_bytes, sizeof two_bytes, out, sizeof out, &dlen) == EHL_OK && dlen == 2 &&
                  out[0] == 0x11 && out[1] == 0x22,
              "COBS: two bytes");
        CHECK(ehl_cobs_encode(two_bytes, 0, out, sizeof out) == 1 && out[0] == 0x01, "COBS: empty input is one byte");
        CHECK(ehl_cobs_encode(two_bytes, 3, out, 3) == 0, "COBS: output too small is 0");
    }
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "../vectors";
    long fuzz = argc > 2 ? strtol(argv[2], NULL, 10) : 200000;
    test_crc();
    test_frames(dir);
    test_zones(dir);
    test_streams(dir);
    test_config_and_bounds();
    test_zones_rejected_leave_output_untouched();
    test_version_negotiation();
    test_builders_and_error_convention();
    test_cobs_round_trip();
    test_fuzz(fuzz);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
