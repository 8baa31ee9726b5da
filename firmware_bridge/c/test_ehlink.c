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
    uint8_t payload[12] = {48, 48, 12, 1, 220, 0, 0, 2, 0xF4, 0x01, 100, 0};
    ehl_msg_t msg;
    ehl_config_t cfg;
    msg.type = EHL_CONFIG;
    msg.length = 12;
    msg.payload = payload;
    CHECK(ehl_parse_config(&msg, &cfg) == EHL_OK && ehl_config_valid(&cfg) == EHL_OK, "valid config");
    CHECK(cfg.safe_level == 512 && cfg.watchdog_ms == 500 && cfg.heartbeat_ms == 100, "config fields");
    cfg.safe_level = 4096;
    CHECK(ehl_config_valid(&cfg) == EHL_ERR_ARG, "safe level above 12 bits refused");
    cfg.safe_level = 0;
    cfg.heartbeat_ms = 300;
    CHECK(ehl_config_valid(&cfg) == EHL_ERR_ARG, "heartbeat >= watchdog/2 refused");
    msg.length = 11;
    CHECK(ehl_parse_config(&msg, &cfg) == EHL_ERR_ARG, "short config refused");
    CHECK(ehl_encode(tx_buf, 8, 1, EHL_HELLO, 0, 0, payload, 4) == 0, "too small output refused");
    CHECK(ehl_encode(tx_buf, sizeof tx_buf, 1, EHL_ZONES, 0, 0, bytes_a, EHL_MAX_PAYLOAD + 1) == 0,
          "oversize payload refused");
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
    uint8_t hb[8];
    ehl_build_heartbeat(77, EHL_STATE_RUNNING, hb, sizeof hb);
    good_len = ehl_encode(good, sizeof good, 1, EHL_HEARTBEAT, 0, 7, hb, 8);
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
            size_t n = ehl_cobs_decode(frame, flen - 1, raw, sizeof raw);
            if (n != (size_t)-1 && n >= 14) {
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
        if (feed_all(&d, good, good_len, &msg) != 1 || msg.seq != 7 || msg.length != 8 ||
            memcmp(msg.payload, hb, 8) != 0) {
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
        dlen = ehl_cobs_decode(bytes_b, e, bytes_b, sizeof bytes_b); /* in place */
        CHECK(dlen == len && memcmp(bytes_a, bytes_b, len) == 0, "COBS round trip of %lu bytes", (unsigned long)len);
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
    test_cobs_round_trip();
    test_fuzz(fuzz);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
