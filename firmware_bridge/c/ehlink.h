/*
 * ehlink - EdgeHDR LED-zone link, C99 reference implementation (controller side).
 *
 * The byte-level contract is firmware_bridge/PROTOCOL.md; the Python host in
 * firmware_bridge/protocol.py produces the same bytes (shared test vectors in
 * firmware_bridge/vectors/ prove it). No dynamic allocation, no global state:
 * every buffer belongs to the caller, every length is checked.
 *
 * INTEGRATION GUIDE
 *
 *   1. Give the decoder a buffer of EHL_MAX_ENCODED bytes (4898) and initialise it once:
 *
 *          static uint8_t rx_buf[EHL_MAX_ENCODED];
 *          static ehl_decoder_t rx;
 *          ehl_decoder_init(&rx, rx_buf, sizeof rx_buf);
 *
 *   2. Feed every received byte, e.g. from the UART RX interrupt or while draining a
 *      DMA ring buffer in the main loop. ehl_decoder_feed() is O(1) per byte except on
 *      the 0x00 delimiter, where it decodes and checks the frame (O(frame length)); if
 *      that is too long for your ISR, push bytes into a ring in the ISR and feed from
 *      the main loop.
 *
 *          ehl_msg_t msg;
 *          if (ehl_decoder_feed(&rx, byte, &msg) == EHL_OK) handle(&msg);
 *
 *      msg.payload points into rx_buf and is valid until the next feed. Corrupted or
 *      truncated frames return EHL_ERR_* and are counted in rx.stats; the decoder
 *      resynchronises at the next 0x00 by itself.
 *
 *   3. Handle messages: ehl_parse_hello() / ehl_parse_config() / ehl_parse_zones() check
 *      and unpack the payloads (zones into a caller-supplied uint16_t array of rows*cols
 *      values; a rejected frame leaves the array untouched). ehl_config_valid() checks
 *      the CONFIG ranges.
 *      Latest-wins: keep only the newest unapplied ZONES frame and apply it at vsync.
 *
 *   4. Reply: build the payload with ehl_build_caps(), ehl_build_ack(), ... into a
 *      small array, then frame it with ehl_encode() into a TX buffer of
 *      EHL_MAX_ENCODED + 1 bytes (or less for small messages) and send the returned
 *      number of bytes (the 0x00 delimiter included).
 *
 *   5. Watchdog: if no EHL_OK frame arrived for watchdog_ms, drive every zone at the
 *      configured safe level.
 *
 * VERSION NEGOTIATION
 *
 *   The decoder starts at EHL_PROTOCOL_VERSION. It delivers HELLO frames of ANY header
 *   version (a controller must see a newer host's HELLO to answer it); every other type
 *   of another version is rejected with EHL_ERR_VERSION and counted in stats.rejected.
 *   On HELLO: ehl_parse_hello() gives the host's range [version_min, version_max];
 *   answer CAPS with the highest version both sides speak, in a frame of that version,
 *   and ehl_decoder_set_version(&rx, v); if the ranges do not overlap, answer
 *   NACK(EHL_NACK_UNSUPPORTED_VERSION) in a frame of the controller's own version
 *   (EHL_PROTOCOL_VERSION) and keep the decoder's version. Answer a HELLO whatever its
 *   version; never answer a rejected frame.
 *
 * ERROR CONVENTION
 *
 *   - Functions that check input return int: EHL_OK (0) on success, a negative
 *     EHL_ERR_* on failure (ehl_decoder_feed() also returns EHL_NEED_MORE, 1).
 *     On failure they write nothing to the caller's outputs: a rejected ZONES frame
 *     leaves `values` and `head` as they were.
 *   - Functions that produce bytes (ehl_encode, ehl_cobs_encode, ehl_build_*) return
 *     size_t, the number of bytes written, and 0 on error (bad argument or output too
 *     small). No valid output is empty, so 0 is never a length. On error the output
 *     buffer may hold partial bytes.
 *
 * PORTABILITY
 *
 *   Plain C99 with <stdint.h>/<stddef.h> only; no allocation, no global state, no
 *   reliance on struct layout or byte order. Correct where int is 16 bits (AVR) as
 *   well as 32: every shift and product that can leave 16 bits is done in uint32_t.
 *   `make portability` compiles it with -Wconversion for Cortex-M0 and AVR; `make avr-test`
 *   runs test_target.c on a simulated ATmega2560 (simavr). On AVR the 64-byte CRC table is
 *   const data, which avr-gcc places in SRAM.
 *
 *   Build and test on the host: `make test` (gcc or clang; ASan + UBSan).
 */
#ifndef EHLINK_H
#define EHLINK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EHL_PROTOCOL_VERSION 1u
#define EHL_MAGIC0 0x45u /* 'E' */
#define EHL_MAGIC1 0x48u /* 'H' */
#define EHL_HEADER_SIZE 10u
#define EHL_CRC_SIZE 4u
#define EHL_MAX_PAYLOAD 4864u
#define EHL_MAX_FRAME (EHL_HEADER_SIZE + EHL_MAX_PAYLOAD + EHL_CRC_SIZE)
#define EHL_MAX_ENCODED (EHL_MAX_FRAME + (EHL_MAX_FRAME + 253u) / 254u)
#define EHL_FLAG_ACK_REQUEST 0x01u
#define EHL_FEATURE_PACKED_ZONES 0x01u

/* Payload sizes in bytes (PROTOCOL.md, "Messages"). ZONES is its head plus the zone data. */
#define EHL_HELLO_SIZE 4u
#define EHL_CAPS_SIZE 12u
#define EHL_CONFIG_SIZE 12u
#define EHL_ZONES_HEAD_SIZE 12u
#define EHL_ACK_SIZE 4u
#define EHL_NACK_SIZE 4u
#define EHL_HEARTBEAT_SIZE 8u
#define EHL_STATUS_REQUEST_SIZE 0u
#define EHL_STATUS_SIZE 28u

/* Value ranges that ehl_config_valid() and ehl_parse_zones() enforce. */
#define EHL_MIN_BITS 8u
#define EHL_MAX_BITS 16u
#define EHL_ENCODING_RAW 0u
#define EHL_ENCODING_PACKED 1u
#define EHL_DRIVE_LINEAR 0u
#define EHL_DRIVE_POWER 1u
#define EHL_MIN_GAMMA_X100 1u
#define EHL_MAX_GAMMA_X100 1000u
#define EHL_MIN_WATCHDOG_MS 50u
#define EHL_MIN_HEARTBEAT_MS 10u

enum ehl_type {
    EHL_HELLO = 0x01,
    EHL_CAPS = 0x02,
    EHL_CONFIG = 0x03,
    EHL_ZONES = 0x04,
    EHL_ACK = 0x05,
    EHL_NACK = 0x06,
    EHL_HEARTBEAT = 0x07,
    EHL_STATUS_REQUEST = 0x08,
    EHL_STATUS = 0x09
};

enum ehl_nack_reason {
    EHL_NACK_UNSUPPORTED_VERSION = 1,
    EHL_NACK_BAD_LENGTH = 2,
    EHL_NACK_BAD_CONFIG = 3,
    EHL_NACK_NOT_CONFIGURED = 4,
    EHL_NACK_ZONE_MISMATCH = 5,
    EHL_NACK_UNKNOWN_TYPE = 6
};

enum ehl_state { EHL_STATE_UNCONFIGURED = 0, EHL_STATE_RUNNING = 1, EHL_STATE_FALLBACK = 2 };

/* Return codes of the int-returning functions (see ERROR CONVENTION above). */
enum ehl_result {
    EHL_OK = 0,             /* a valid frame (decoder) or success */
    EHL_NEED_MORE = 1,      /* decoder only: no complete frame yet */
    EHL_ERR_FRAMING = -1,   /* bad COBS, too short, bad magic or length field */
    EHL_ERR_CRC = -2,       /* CRC mismatch */
    EHL_ERR_OVERFLOW = -3,  /* frame longer than the buffer: discarded up to the next 0x00 */
    EHL_ERR_VERSION = -4,   /* non-HELLO frame of another protocol version */
    EHL_ERR_ARG = -5,       /* bad argument, or payload of the wrong type, length or content */
    EHL_ERR_SPACE = -6      /* output buffer too small (ehl_cobs_decode) */
};

typedef struct {
    uint32_t frames;         /* valid frames delivered */
    uint32_t crc_errors;
    uint32_t framing_errors; /* includes overflows */
    uint32_t overflows;
    uint32_t rejected;       /* non-HELLO frames of another version */
} ehl_stats_t;

typedef struct {
    uint8_t version;
    uint8_t type;
    uint8_t flags;
    uint16_t seq;
    uint16_t length;
    const uint8_t *payload; /* points into the decoder buffer */
} ehl_msg_t;

typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    int discarding;       /* overflowed: drop bytes until the next delimiter */
    uint8_t version;      /* accepted version for non-HELLO frames; 0 accepts any */
    ehl_stats_t stats;
} ehl_decoder_t;

typedef struct {
    uint8_t rows, cols, bits, drive_curve;
    uint16_t drive_gamma_x100, safe_level, watchdog_ms, heartbeat_ms;
} ehl_config_t;

typedef struct {
    uint32_t frame_id, present_vsync;
    uint8_t rows, cols, bits, encoding;
} ehl_zones_head_t;

typedef struct {
    uint8_t version, fw_major, fw_minor, fw_patch, rows, cols, max_bits, features;
    uint16_t max_fps, max_payload;
} ehl_caps_t;

typedef struct {
    uint32_t frames_applied, frames_superseded, crc_errors, framing_errors, rejected, last_frame_id;
    uint16_t faults;
    uint8_t state;
} ehl_status_t;

/* CRC-32/ISO-HDLC (zlib): start with crc = 0, chain calls over consecutive chunks. */
uint32_t ehl_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* COBS. Encode: returns bytes written to out (no delimiter; at least 1), 0 if it does not fit.
 * Decode: in-place allowed (out == in); EHL_OK with the decoded length in *out_len,
 * EHL_ERR_FRAMING if malformed, EHL_ERR_SPACE if out_cap is too small (*out_len untouched). */
size_t ehl_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);
int ehl_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap, size_t *out_len);

void ehl_decoder_init(ehl_decoder_t *d, uint8_t *buf, size_t cap);
/* Non-HELLO frames are delivered only in `version` (0 accepts any); HELLO in any version. */
void ehl_decoder_set_version(ehl_decoder_t *d, uint8_t version);
/* EHL_OK: *msg holds a valid frame. EHL_NEED_MORE: keep feeding. EHL_ERR_*: a frame was dropped. */
int ehl_decoder_feed(ehl_decoder_t *d, uint8_t byte, ehl_msg_t *msg);

/* Frame one message into out: COBS(header|payload|crc) 0x00. Returns bytes written, 0 on error. */
size_t ehl_encode(uint8_t *out, size_t out_cap, uint8_t version, uint8_t type, uint8_t flags, uint16_t seq,
                  const uint8_t *payload, uint16_t length);

/* Payload parsers and checks: EHL_OK, or EHL_ERR_ARG with the outputs untouched.
 * ehl_parse_zones() checks the head, that rows*cols <= max_values, the exact length and that
 * every raw value fits `bits`, all before it writes head and values[0 .. rows*cols-1]. */
int ehl_parse_config(const ehl_msg_t *m, ehl_config_t *cfg);
int ehl_config_valid(const ehl_config_t *cfg);
int ehl_parse_zones(const ehl_msg_t *m, ehl_zones_head_t *head, uint16_t *values, size_t max_values);
/* Only the 12-byte head of a ZONES message (e.g. to drop a stale frame id or a grid of another size before
 * unpacking); checks the type and that the head is there, nothing of the values. */
int ehl_parse_zones_head(const ehl_msg_t *m, ehl_zones_head_t *head);
int ehl_parse_hello(const ehl_msg_t *m, uint8_t *version_min, uint8_t *version_max, uint16_t *host_features);

/* Payload builders: write into out, return the payload length (EHL_*_SIZE), 0 if out_cap is too small. */
size_t ehl_build_caps(const ehl_caps_t *caps, uint8_t *out, size_t out_cap);
size_t ehl_build_ack(uint16_t ref_seq, uint8_t ref_type, uint8_t *out, size_t out_cap);
size_t ehl_build_nack(uint16_t ref_seq, uint8_t ref_type, uint8_t reason, uint8_t *out, size_t out_cap);
size_t ehl_build_heartbeat(uint32_t uptime_ms, uint8_t state, uint8_t *out, size_t out_cap);
size_t ehl_build_status(const ehl_status_t *st, uint8_t *out, size_t out_cap);
/* Host-side builder, used by tests and by controllers that talk to each other. Returns
 * EHL_ZONES_HEAD_SIZE + data bytes, 0 if the head is invalid, a value is wider than `bits`,
 * the payload exceeds EHL_MAX_PAYLOAD or out_cap. */
size_t ehl_build_zones(const ehl_zones_head_t *head, const uint16_t *values, uint8_t *out, size_t out_cap);

#ifdef __cplusplus
}
#endif

#endif /* EHLINK_H */
