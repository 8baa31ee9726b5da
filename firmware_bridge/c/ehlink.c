/* ehlink - EdgeHDR LED-zone link, C99 reference implementation. See ehlink.h and PROTOCOL.md.
 * Written for an int of 16 bits as well as 32: a uint8_t or uint16_t operand promotes to (16-bit)
 * int or unsigned, so every shift or product that can leave 16 bits casts to uint32_t first. */
#include "ehlink.h"

/* Header field offsets (PROTOCOL.md, "Header"). */
#define HDR_MAGIC 0u
#define HDR_VERSION 2u
#define HDR_TYPE 3u
#define HDR_FLAGS 4u
#define HDR_RESERVED 5u
#define HDR_SEQ 6u
#define HDR_LENGTH 8u
#define COBS_MAX_RUN 0xFFu /* a COBS code byte of 0xFF: 254 data bytes, no implied zero */

/* CRC-32/ISO-HDLC, reflected polynomial 0xEDB88320, four bits at a time (64-byte table). */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

uint32_t ehl_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
    }
    return ~crc;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((unsigned)v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

/* p[1] << 8 would shift a signed 16-bit int into its sign bit: widen to unsigned first. */
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)((unsigned)p[0] | ((unsigned)p[1] << 8)); }

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ------------------------------------------------------------------------------------------ COBS */

/* Encoder over up to three input segments (header, payload, crc) without copying them together.
 * A new block starts after 254 data bytes only if more input follows (the framing the Python
 * `cobs` package produces). */
static size_t cobs_encode_segments(const uint8_t *const seg[3], const size_t seg_len[3], uint8_t *out,
                                   size_t out_cap)
{
    size_t code_idx = 0, write = 1, total = seg_len[0] + seg_len[1] + seg_len[2], done = 0;
    unsigned s;
    uint8_t code = 1;
    if (out == NULL || out_cap == 0) {
        return 0;
    }
    for (s = 0; s < 3; s++) {
        size_t i;
        for (i = 0; i < seg_len[s]; i++) {
            uint8_t b = seg[s][i];
            done++;
            if (b == 0) {
                out[code_idx] = code;
                if (write >= out_cap) {
                    return 0;
                }
                code_idx = write++;
                code = 1;
            } else {
                if (write >= out_cap) {
                    return 0;
                }
                out[write++] = b;
                code++;
                if (code == COBS_MAX_RUN && done < total) {
                    out[code_idx] = code;
                    if (write >= out_cap) {
                        return 0;
                    }
                    code_idx = write++;
                    code = 1;
                }
            }
        }
    }
    out[code_idx] = code;
    return write;
}

size_t ehl_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap)
{
    const uint8_t *seg[3];
    size_t seg_len[3];
    if (in == NULL && len != 0) {
        return 0;
    }
    seg[0] = in;
    seg[1] = in;
    seg[2] = in;
    seg_len[0] = len;
    seg_len[1] = 0;
    seg_len[2] = 0;
    return cobs_encode_segments(seg, seg_len, out, out_cap);
}

int ehl_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap, size_t *out_len)
{
    size_t r = 0, w = 0;
    if ((in == NULL && len != 0) || (out == NULL && out_cap != 0) || out_len == NULL) {
        return EHL_ERR_ARG;
    }
    while (r < len) {
        uint8_t code = in[r++];
        uint8_t i;
        if (code == 0) {
            return EHL_ERR_FRAMING;
        }
        for (i = 1; i < code; i++) {
            if (r >= len || in[r] == 0) {
                return EHL_ERR_FRAMING;
            }
            if (w >= out_cap) {
                return EHL_ERR_SPACE;
            }
            out[w++] = in[r++];
        }
        if (code != COBS_MAX_RUN && r < len) {
            if (w >= out_cap) {
                return EHL_ERR_SPACE;
            }
            out[w++] = 0;
        }
    }
    *out_len = w;
    return EHL_OK;
}

/* ------------------------------------------------------------------------------------------ decoder */

void ehl_decoder_init(ehl_decoder_t *d, uint8_t *buf, size_t cap)
{
    d->buf = buf;
    d->cap = buf != NULL ? cap : 0;
    d->len = 0;
    d->discarding = 0;
    d->version = EHL_PROTOCOL_VERSION;
    d->stats.frames = 0;
    d->stats.crc_errors = 0;
    d->stats.framing_errors = 0;
    d->stats.overflows = 0;
    d->stats.rejected = 0;
}

void ehl_decoder_set_version(ehl_decoder_t *d, uint8_t version) { d->version = version; }

int ehl_decoder_feed(ehl_decoder_t *d, uint8_t byte, ehl_msg_t *msg)
{
    size_t n;
    uint16_t length;
    uint8_t version, type;
    if (byte != 0) {
        if (d->discarding) {
            return EHL_NEED_MORE;
        }
        if (d->len >= d->cap) {
            d->discarding = 1;
            d->len = 0;
            d->stats.overflows++;
            d->stats.framing_errors++;
            return EHL_ERR_OVERFLOW;
        }
        d->buf[d->len++] = byte;
        return EHL_NEED_MORE;
    }
    if (d->discarding) {
        d->discarding = 0;
        d->len = 0;
        return EHL_NEED_MORE;
    }
    if (d->len == 0) {
        return EHL_NEED_MORE; /* idle fill */
    }
    n = d->len;
    d->len = 0;
    if (ehl_cobs_decode(d->buf, n, d->buf, d->cap, &n) != EHL_OK || n < EHL_HEADER_SIZE + EHL_CRC_SIZE ||
        d->buf[HDR_MAGIC] != EHL_MAGIC0 || d->buf[HDR_MAGIC + 1u] != EHL_MAGIC1) {
        d->stats.framing_errors++;
        return EHL_ERR_FRAMING;
    }
    if (ehl_crc32(0, d->buf, n - EHL_CRC_SIZE) != get_u32(d->buf + n - EHL_CRC_SIZE)) {
        d->stats.crc_errors++;
        return EHL_ERR_CRC;
    }
    length = get_u16(d->buf + HDR_LENGTH);
    if ((size_t)length != n - EHL_HEADER_SIZE - EHL_CRC_SIZE || length > EHL_MAX_PAYLOAD) {
        d->stats.framing_errors++;
        return EHL_ERR_FRAMING;
    }
    version = d->buf[HDR_VERSION];
    type = d->buf[HDR_TYPE];
    /* HELLO passes in any version: the controller must read it to negotiate (or to NACK it). */
    if (type != EHL_HELLO && d->version != 0 && version != d->version) {
        d->stats.rejected++;
        return EHL_ERR_VERSION;
    }
    d->stats.frames++;
    msg->version = version;
    msg->type = type;
    msg->flags = d->buf[HDR_FLAGS];
    msg->seq = get_u16(d->buf + HDR_SEQ);
    msg->length = length;
    msg->payload = d->buf + EHL_HEADER_SIZE;
    return EHL_OK;
}

/* ------------------------------------------------------------------------------------------ encoder */

size_t ehl_encode(uint8_t *out, size_t out_cap, uint8_t version, uint8_t type, uint8_t flags, uint16_t seq,
                  const uint8_t *payload, uint16_t length)
{
    uint8_t header[EHL_HEADER_SIZE];
    uint8_t crc_bytes[EHL_CRC_SIZE];
    const uint8_t *seg[3];
    size_t seg_len[3];
    size_t n;
    uint32_t crc;
    if (out == NULL || length > EHL_MAX_PAYLOAD || (payload == NULL && length != 0) || out_cap < 2) {
        return 0;
    }
    header[HDR_MAGIC] = EHL_MAGIC0;
    header[HDR_MAGIC + 1u] = EHL_MAGIC1;
    header[HDR_VERSION] = version;
    header[HDR_TYPE] = type;
    header[HDR_FLAGS] = flags;
    header[HDR_RESERVED] = 0;
    put_u16(header + HDR_SEQ, seq);
    put_u16(header + HDR_LENGTH, length);
    crc = ehl_crc32(0, header, sizeof header);
    if (length != 0) {
        crc = ehl_crc32(crc, payload, length);
    }
    put_u32(crc_bytes, crc);
    seg[0] = header;
    seg_len[0] = sizeof header;
    seg[1] = payload != NULL ? payload : header;
    seg_len[1] = length;
    seg[2] = crc_bytes;
    seg_len[2] = sizeof crc_bytes;
    n = cobs_encode_segments(seg, seg_len, out, out_cap - 1u); /* keep room for the delimiter */
    if (n == 0) {
        return 0;
    }
    out[n] = 0;
    return n + 1u;
}

/* ------------------------------------------------------------------------------------------ payloads */

/* Largest zone value of `bits` (8..16) bits, without 1 << 16 (undefined where unsigned is 16 bits). */
static uint16_t zone_max(uint8_t bits) { return (uint16_t)(0xFFFFu >> (EHL_MAX_BITS - bits)); }

static int zone_format_valid(uint8_t rows, uint8_t cols, uint8_t bits, uint8_t encoding)
{
    return rows >= 1u && cols >= 1u && bits >= EHL_MIN_BITS && bits <= EHL_MAX_BITS &&
           (encoding == EHL_ENCODING_RAW || encoding == EHL_ENCODING_PACKED);
}

/* Zone data bytes after the head. In uint32_t: 255 * 255 zones * 16 bits overflows a 16-bit size_t. */
static uint32_t zone_data_size(uint32_t zones, uint8_t bits, uint8_t encoding)
{
    if (encoding == EHL_ENCODING_PACKED) {
        return (zones * bits + 7u) / 8u;
    }
    return zones * (bits <= 8u ? 1u : 2u);
}

int ehl_parse_hello(const ehl_msg_t *m, uint8_t *version_min, uint8_t *version_max, uint16_t *host_features)
{
    if (m == NULL || version_min == NULL || version_max == NULL || host_features == NULL ||
        m->type != EHL_HELLO || m->length != EHL_HELLO_SIZE || m->payload == NULL) {
        return EHL_ERR_ARG;
    }
    *version_min = m->payload[0];
    *version_max = m->payload[1];
    *host_features = get_u16(m->payload + 2);
    return EHL_OK;
}

int ehl_parse_config(const ehl_msg_t *m, ehl_config_t *cfg)
{
    const uint8_t *p;
    if (m == NULL || cfg == NULL || m->type != EHL_CONFIG || m->length != EHL_CONFIG_SIZE || m->payload == NULL) {
        return EHL_ERR_ARG;
    }
    p = m->payload;
    cfg->rows = p[0];
    cfg->cols = p[1];
    cfg->bits = p[2];
    cfg->drive_curve = p[3];
    cfg->drive_gamma_x100 = get_u16(p + 4);
    cfg->safe_level = get_u16(p + 6);
    cfg->watchdog_ms = get_u16(p + 8);
    cfg->heartbeat_ms = get_u16(p + 10);
    return EHL_OK;
}

int ehl_config_valid(const ehl_config_t *c)
{
    if (c == NULL || !zone_format_valid(c->rows, c->cols, c->bits, EHL_ENCODING_RAW) ||
        c->drive_curve > EHL_DRIVE_POWER) {
        return EHL_ERR_ARG;
    }
    if (c->drive_gamma_x100 < EHL_MIN_GAMMA_X100 || c->drive_gamma_x100 > EHL_MAX_GAMMA_X100) {
        return EHL_ERR_ARG;
    }
    if (c->safe_level > zone_max(c->bits)) {
        return EHL_ERR_ARG;
    }
    /* 2 * heartbeat_ms in 32 bits: in a 16-bit unsigned, 2 * 40000 wraps below any watchdog. */
    if (c->watchdog_ms < EHL_MIN_WATCHDOG_MS || c->heartbeat_ms < EHL_MIN_HEARTBEAT_MS ||
        2u * (uint32_t)c->heartbeat_ms >= c->watchdog_ms) {
        return EHL_ERR_ARG;
    }
    if (EHL_ZONES_HEAD_SIZE + zone_data_size((uint32_t)c->rows * c->cols, c->bits, EHL_ENCODING_RAW) >
        EHL_MAX_PAYLOAD) {
        return EHL_ERR_ARG;
    }
    return EHL_OK;
}

int ehl_parse_zones_head(const ehl_msg_t *m, ehl_zones_head_t *head)
{
    const uint8_t *p;
    if (m == NULL || head == NULL || m->type != EHL_ZONES || m->length < EHL_ZONES_HEAD_SIZE || m->payload == NULL) {
        return EHL_ERR_ARG;
    }
    p = m->payload;
    head->frame_id = get_u32(p);
    head->present_vsync = get_u32(p + 4);
    head->rows = p[8];
    head->cols = p[9];
    head->bits = p[10];
    head->encoding = p[11];
    return EHL_OK;
}

int ehl_parse_zones(const ehl_msg_t *m, ehl_zones_head_t *head, uint16_t *values, size_t max_values)
{
    const uint8_t *p, *data;
    ehl_zones_head_t h;
    uint32_t zones;
    size_t n, i;
    /* Validate the whole payload before writing head or values: a rejected frame must leave the
     * caller's last good zone frame intact. */
    if (head == NULL || values == NULL || ehl_parse_zones_head(m, &h) != EHL_OK) {
        return EHL_ERR_ARG;
    }
    p = m->payload;
    if (!zone_format_valid(h.rows, h.cols, h.bits, h.encoding)) {
        return EHL_ERR_ARG;
    }
    zones = (uint32_t)h.rows * h.cols;
    if (zones > max_values) {
        return EHL_ERR_ARG;
    }
    if ((uint32_t)m->length != EHL_ZONES_HEAD_SIZE + zone_data_size(zones, h.bits, h.encoding)) {
        return EHL_ERR_ARG;
    }
    n = (size_t)zones; /* fits: zones <= max_values */
    data = p + EHL_ZONES_HEAD_SIZE;
    /* Only raw 9..15-bit zones can carry a value wider than `bits` (8-bit raw zones are bytes, packed
     * zones are exactly `bits` wide). 2 * i fits a 16-bit size_t: the length check bounds it. */
    if (h.encoding == EHL_ENCODING_RAW && h.bits > 8u && h.bits < EHL_MAX_BITS) {
        uint16_t top = zone_max(h.bits);
        for (i = 0; i < n; i++) {
            if (get_u16(data + 2u * i) > top) {
                return EHL_ERR_ARG;
            }
        }
    }
    if (h.encoding == EHL_ENCODING_RAW) {
        for (i = 0; i < n; i++) {
            values[i] = h.bits <= 8u ? data[i] : get_u16(data + 2u * i);
        }
    } else {
        /* LSB-first bit stream: at most 7 + 16 bits are pending in acc. */
        uint32_t acc = 0;
        unsigned have = 0;
        uint16_t mask = zone_max(h.bits);
        size_t byte = 0;
        for (i = 0; i < n; i++) {
            while (have < h.bits) {
                acc |= (uint32_t)data[byte++] << have;
                have += 8u;
            }
            values[i] = (uint16_t)(acc & mask);
            acc >>= h.bits;
            have -= h.bits;
        }
    }
    *head = h;
    return EHL_OK;
}

size_t ehl_build_zones(const ehl_zones_head_t *head, const uint16_t *values, uint8_t *out, size_t out_cap)
{
    uint32_t zones, size;
    size_t n, i;
    uint8_t *data;
    uint16_t top;
    if (head == NULL || values == NULL || out == NULL ||
        !zone_format_valid(head->rows, head->cols, head->bits, head->encoding)) {
        return 0;
    }
    zones = (uint32_t)head->rows * head->cols;
    size = EHL_ZONES_HEAD_SIZE + zone_data_size(zones, head->bits, head->encoding);
    if (size > out_cap || size > EHL_MAX_PAYLOAD) {
        return 0;
    }
    n = (size_t)zones; /* fits: zones < size <= out_cap */
    top = zone_max(head->bits);
    for (i = 0; i < n; i++) {
        if (values[i] > top) {
            return 0; /* the receiver would reject it (raw) or it would not survive packing */
        }
    }
    put_u32(out, head->frame_id);
    put_u32(out + 4, head->present_vsync);
    out[8] = head->rows;
    out[9] = head->cols;
    out[10] = head->bits;
    out[11] = head->encoding;
    data = out + EHL_ZONES_HEAD_SIZE;
    if (head->encoding == EHL_ENCODING_RAW) {
        for (i = 0; i < n; i++) {
            if (head->bits <= 8u) {
                data[i] = (uint8_t)values[i];
            } else {
                put_u16(data + 2u * i, values[i]);
            }
        }
    } else {
        uint32_t acc = 0;
        unsigned have = 0;
        size_t byte = 0;
        for (i = 0; i < n; i++) {
            acc |= (uint32_t)values[i] << have;
            have += head->bits;
            while (have >= 8u) {
                data[byte++] = (uint8_t)(acc & 0xFFu);
                acc >>= 8;
                have -= 8u;
            }
        }
        if (have != 0) {
            data[byte] = (uint8_t)acc;
        }
    }
    return (size_t)size;
}

size_t ehl_build_caps(const ehl_caps_t *c, uint8_t *out, size_t out_cap)
{
    if (c == NULL || out == NULL || out_cap < EHL_CAPS_SIZE) {
        return 0;
    }
    out[0] = c->version;
    out[1] = c->fw_major;
    out[2] = c->fw_minor;
    out[3] = c->fw_patch;
    out[4] = c->rows;
    out[5] = c->cols;
    out[6] = c->max_bits;
    out[7] = c->features;
    put_u16(out + 8, c->max_fps);
    put_u16(out + 10, c->max_payload);
    return EHL_CAPS_SIZE;
}

size_t ehl_build_nack(uint16_t ref_seq, uint8_t ref_type, uint8_t reason, uint8_t *out, size_t out_cap)
{
    if (out == NULL || out_cap < EHL_NACK_SIZE) {
        return 0;
    }
    put_u16(out, ref_seq);
    out[2] = ref_type;
    out[3] = reason;
    return EHL_NACK_SIZE;
}

/* ACK has NACK's layout with the last byte (reason) reserved as 0. */
size_t ehl_build_ack(uint16_t ref_seq, uint8_t ref_type, uint8_t *out, size_t out_cap)
{
    return ehl_build_nack(ref_seq, ref_type, 0, out, out_cap);
}

size_t ehl_build_heartbeat(uint32_t uptime_ms, uint8_t state, uint8_t *out, size_t out_cap)
{
    if (out == NULL || out_cap < EHL_HEARTBEAT_SIZE) {
        return 0;
    }
    put_u32(out, uptime_ms);
    out[4] = state;
    out[5] = 0;
    out[6] = 0;
    out[7] = 0;
    return EHL_HEARTBEAT_SIZE;
}

size_t ehl_build_status(const ehl_status_t *s, uint8_t *out, size_t out_cap)
{
    if (s == NULL || out == NULL || out_cap < EHL_STATUS_SIZE) {
        return 0;
    }
    put_u32(out, s->frames_applied);
    put_u32(out + 4, s->frames_superseded);
    put_u32(out + 8, s->crc_errors);
    put_u32(out + 12, s->framing_errors);
    put_u32(out + 16, s->rejected);
    put_u32(out + 20, s->last_frame_id);
    put_u16(out + 24, s->faults);
    out[26] = s->state;
    out[27] = 0;
    return EHL_STATUS_SIZE;
}
