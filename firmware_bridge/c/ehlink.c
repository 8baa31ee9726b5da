/* ehlink - EdgeHDR LED-zone link, C99 reference implementation. See ehlink.h and PROTOCOL.md. */
#include "ehlink.h"

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
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

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
    if (out_cap == 0) {
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
                if (code == 0xFFu && done < total) {
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
    seg[0] = in;
    seg[1] = in;
    seg[2] = in;
    seg_len[0] = len;
    seg_len[1] = 0;
    seg_len[2] = 0;
    return cobs_encode_segments(seg, seg_len, out, out_cap);
}

size_t ehl_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap)
{
    size_t r = 0, w = 0;
    while (r < len) {
        uint8_t code = in[r++];
        uint8_t i;
        if (code == 0) {
            return (size_t)-1;
        }
        for (i = 1; i < code; i++) {
            if (r >= len || in[r] == 0 || w >= out_cap) {
                return (size_t)-1;
            }
            out[w++] = in[r++];
        }
        if (code != 0xFFu && r < len) {
            if (w >= out_cap) {
                return (size_t)-1;
            }
            out[w++] = 0;
        }
    }
    return w;
}

/* ------------------------------------------------------------------------------------------ decoder */

void ehl_decoder_init(ehl_decoder_t *d, uint8_t *buf, size_t cap)
{
    d->buf = buf;
    d->cap = cap;
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
    uint32_t crc;
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
    n = ehl_cobs_decode(d->buf, d->len, d->buf, d->cap);
    d->len = 0;
    if (n == (size_t)-1 || n < EHL_HEADER_SIZE + EHL_CRC_SIZE || d->buf[0] != EHL_MAGIC0 || d->buf[1] != EHL_MAGIC1) {
        d->stats.framing_errors++;
        return EHL_ERR_FRAMING;
    }
    crc = get_u32(d->buf + n - EHL_CRC_SIZE);
    if (ehl_crc32(0, d->buf, n - EHL_CRC_SIZE) != crc) {
        d->stats.crc_errors++;
        return EHL_ERR_CRC;
    }
    length = get_u16(d->buf + 8);
    if ((size_t)length != n - EHL_HEADER_SIZE - EHL_CRC_SIZE || length > EHL_MAX_PAYLOAD) {
        d->stats.framing_errors++;
        return EHL_ERR_FRAMING;
    }
    if (d->version != 0 && d->buf[2] != d->version) {
        d->stats.rejected++;
        return EHL_ERR_VERSION;
    }
    d->stats.frames++;
    msg->version = d->buf[2];
    msg->type = d->buf[3];
    msg->flags = d->buf[4];
    msg->seq = get_u16(d->buf + 6);
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
    header[0] = EHL_MAGIC0;
    header[1] = EHL_MAGIC1;
    header[2] = version;
    header[3] = type;
    header[4] = flags;
    header[5] = 0;
    put_u16(header + 6, seq);
    put_u16(header + 8, length);
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
    n = cobs_encode_segments(seg, seg_len, out, out_cap - 1); /* keep room for the delimiter */
    if (n == 0) {
        return 0;
    }
    out[n] = 0;
    return n + 1;
}

/* ------------------------------------------------------------------------------------------ payloads */

int ehl_parse_hello(const ehl_msg_t *m, uint8_t *version_min, uint8_t *version_max, uint16_t *host_features)
{
    if (m->type != EHL_HELLO || m->length != 4) {
        return EHL_ERR_ARG;
    }
    *version_min = m->payload[0];
    *version_max = m->payload[1];
    *host_features = get_u16(m->payload + 2);
    return EHL_OK;
}

int ehl_parse_config(const ehl_msg_t *m, ehl_config_t *cfg)
{
    const uint8_t *p = m->payload;
    if (m->type != EHL_CONFIG || m->length != 12) {
        return EHL_ERR_ARG;
    }
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
    uint32_t zones = (uint32_t)c->rows * c->cols;
    if (c->rows < 1 || c->cols < 1 || c->bits < 8 || c->bits > 16 || c->drive_curve > 1) {
        return EHL_ERR_ARG;
    }
    if (c->drive_gamma_x100 < 1 || c->drive_gamma_x100 > 1000) {
        return EHL_ERR_ARG;
    }
    if ((uint32_t)c->safe_level >= (1u << c->bits)) {
        return EHL_ERR_ARG;
    }
    if (c->watchdog_ms < 50 || c->heartbeat_ms < 10 || 2u * c->heartbeat_ms >= c->watchdog_ms) {
        return EHL_ERR_ARG;
    }
    if (12u + zones * (c->bits <= 8 ? 1u : 2u) > EHL_MAX_PAYLOAD) {
        return EHL_ERR_ARG;
    }
    return EHL_OK;
}

int ehl_parse_zones(const ehl_msg_t *m, ehl_zones_head_t *head, uint16_t *values, size_t max_values)
{
    const uint8_t *p = m->payload;
    size_t n, i, expected;
    if (m->type != EHL_ZONES || m->length < 12) {
        return EHL_ERR_ARG;
    }
    head->frame_id = get_u32(p);
    head->present_vsync = get_u32(p + 4);
    head->rows = p[8];
    head->cols = p[9];
    head->bits = p[10];
    head->encoding = p[11];
    if (head->rows == 0 || head->cols == 0 || head->bits < 8 || head->bits > 16 || head->encoding > 1) {
        return EHL_ERR_ARG;
    }
    n = (size_t)head->rows * head->cols;
    if (n > max_values) {
        return EHL_ERR_ARG;
    }
    expected = head->encoding == 1 ? (n * head->bits + 7u) / 8u : n * (head->bits <= 8 ? 1u : 2u);
    if ((size_t)m->length != 12u + expected) {
        return EHL_ERR_ARG;
    }
    p += 12;
    if (head->encoding == 0) {
        for (i = 0; i < n; i++) {
            values[i] = head->bits <= 8 ? p[i] : get_u16(p + 2 * i);
        }
    } else {
        size_t bit = 0;
        for (i = 0; i < n; i++) {
            uint32_t v = 0;
            unsigned k;
            for (k = 0; k < head->bits; k++, bit++) {
                v |= (uint32_t)((p[bit >> 3] >> (bit & 7u)) & 1u) << k;
            }
            values[i] = (uint16_t)v;
        }
    }
    if (head->bits < 16) {
        for (i = 0; i < n; i++) {
            if (values[i] >> head->bits) {
                return EHL_ERR_ARG; /* raw value wider than the declared depth */
            }
        }
    }
    return EHL_OK;
}

size_t ehl_build_zones(const ehl_zones_head_t *head, const uint16_t *values, uint8_t *out, size_t out_cap)
{
    size_t n = (size_t)head->rows * head->cols, i, data;
    if (head->bits < 8 || head->bits > 16 || head->encoding > 1 || n == 0) {
        return 0;
    }
    data = head->encoding == 1 ? (n * head->bits + 7u) / 8u : n * (head->bits <= 8 ? 1u : 2u);
    if (12u + data > out_cap || 12u + data > EHL_MAX_PAYLOAD) {
        return 0;
    }
    put_u32(out, head->frame_id);
    put_u32(out + 4, head->present_vsync);
    out[8] = head->rows;
    out[9] = head->cols;
    out[10] = head->bits;
    out[11] = head->encoding;
    if (head->encoding == 0) {
        for (i = 0; i < n; i++) {
            if (head->bits <= 8) {
                out[12 + i] = (uint8_t)values[i];
            } else {
                put_u16(out + 12 + 2 * i, values[i]);
            }
        }
    } else {
        size_t bit = 0;
        for (i = 0; i < data; i++) {
            out[12 + i] = 0;
        }
        for (i = 0; i < n; i++) {
            unsigned k;
            for (k = 0; k < head->bits; k++, bit++) {
                out[12 + (bit >> 3)] |= (uint8_t)(((values[i] >> k) & 1u) << (bit & 7u));
            }
        }
    }
    return 12u + data;
}

size_t ehl_build_caps(const ehl_caps_t *c, uint8_t *out, size_t out_cap)
{
    if (out_cap < 12) {
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
    return 12;
}

size_t ehl_build_nack(uint16_t ref_seq, uint8_t ref_type, uint8_t reason, uint8_t *out, size_t out_cap)
{
    if (out_cap < 4) {
        return 0;
    }
    put_u16(out, ref_seq);
    out[2] = ref_type;
    out[3] = reason;
    return 4;
}

/* ACK has NACK's layout with the last byte (reason) reserved as 0. */
size_t ehl_build_ack(uint16_t ref_seq, uint8_t ref_type, uint8_t *out, size_t out_cap)
{
    return ehl_build_nack(ref_seq, ref_type, 0, out, out_cap);
}

size_t ehl_build_heartbeat(uint32_t uptime_ms, uint8_t state, uint8_t *out, size_t out_cap)
{
    if (out_cap < 8) {
        return 0;
    }
    put_u32(out, uptime_ms);
    out[4] = state;
    out[5] = 0;
    out[6] = 0;
    out[7] = 0;
    return 8;
}

size_t ehl_build_status(const ehl_status_t *s, uint8_t *out, size_t out_cap)
{
    if (out_cap < 28) {
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
    return 28;
}
