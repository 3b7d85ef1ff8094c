/*
 * Frame encoder, CRC and the incremental parser of the serial protocol.
 *
 * The parser keeps the bytes of the frame it is assembling. When a frame turns out to be
 * unusable (oversize length, bad CRC, truncated), it drops only the first sync byte and scans
 * the rest again, so a good frame that was swallowed by a corrupted one is still found.
 */
#include "protocol.h"

#include <string.h>

#define CRC16_POLY 0x1021u
#define CRC16_INIT 0xFFFFu

uint16_t proto_crc16_update(uint16_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int bit;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            if (crc & 0x8000u) {
                crc = (uint16_t)(((unsigned)crc << 1) ^ CRC16_POLY);
            } else {
                crc = (uint16_t)((unsigned)crc << 1);
            }
        }
    }
    return crc;
}

uint16_t proto_crc16(const uint8_t *data, size_t len)
{
    return proto_crc16_update(CRC16_INIT, data, len);
}

void proto_put_u16(uint8_t *dst, uint16_t value)
{
    dst[0] = (uint8_t)(value & 0xFFu);
    dst[1] = (uint8_t)(value >> 8);
}

void proto_put_u32(uint8_t *dst, uint32_t value)
{
    dst[0] = (uint8_t)(value & 0xFFu);
    dst[1] = (uint8_t)((value >> 8) & 0xFFu);
    dst[2] = (uint8_t)((value >> 16) & 0xFFu);
    dst[3] = (uint8_t)(value >> 24);
}

uint16_t proto_get_u16(const uint8_t *src)
{
    return (uint16_t)(src[0] | ((uint16_t)src[1] << 8));
}

uint32_t proto_get_u32(const uint8_t *src)
{
    return (uint32_t)src[0] | ((uint32_t)src[1] << 8) | ((uint32_t)src[2] << 16) |
           ((uint32_t)src[3] << 24);
}

size_t proto_encode(uint8_t *out, size_t cap, uint8_t type, uint16_t seq, const uint8_t *payload,
                    size_t len)
{
    size_t total = PROTO_HEADER_SIZE + len + PROTO_CRC_SIZE;
    uint16_t crc;

    if (len > PROTO_MAX_PAYLOAD || total > cap) {
        return 0;
    }
    out[0] = PROTO_SYNC0;
    out[1] = PROTO_SYNC1;
    out[2] = type;
    proto_put_u16(out + 3, seq);
    proto_put_u16(out + 5, (uint16_t)len);
    if (len > 0) {
        memcpy(out + PROTO_HEADER_SIZE, payload, len);
    }
    crc = proto_crc16(out + 2, PROTO_HEADER_SIZE - 2 + len);
    proto_put_u16(out + PROTO_HEADER_SIZE + len, crc);
    return total;
}

void proto_parser_init(struct proto_parser *parser, proto_frame_fn on_frame,
                       proto_fault_fn on_fault, void *ctx)
{
    parser->fill = 0;
    parser->skipped_bytes = 0;
    parser->on_frame = on_frame;
    parser->on_fault = on_fault;
    parser->ctx = ctx;
}

size_t proto_parser_pending(const struct proto_parser *parser)
{
    return parser->fill;
}

/* Drop the first `count` buffered bytes, then everything up to the next candidate sync byte. */
static void parser_drop(struct proto_parser *parser, size_t count)
{
    size_t start = count;

    while (start < parser->fill && parser->buf[start] != PROTO_SYNC0) {
        start++;
        parser->skipped_bytes++;
    }
    memmove(parser->buf, parser->buf + start, parser->fill - start);
    parser->fill -= start;
}

static void parser_fault(struct proto_parser *parser, uint8_t code)
{
    if (parser->on_fault) {
        parser->on_fault(parser->ctx, code, parser->buf[2], proto_get_u16(parser->buf + 3));
    }
    parser_drop(parser, 1);
}

/*
 * Consume every complete frame or fault at the start of the buffer. With `draining` set, an
 * incomplete frame is treated as truncated instead of waited for.
 */
static void parser_scan(struct proto_parser *parser, int draining)
{
    while (parser->fill > 0) {
        const uint8_t *buf = parser->buf;
        size_t len;
        size_t total;
        struct proto_frame frame;

        if (buf[0] != PROTO_SYNC0 || (parser->fill >= 2 && buf[1] != PROTO_SYNC1)) {
            parser->skipped_bytes++;
            parser_drop(parser, 1);
            continue;
        }
        if (parser->fill < PROTO_HEADER_SIZE) {
            if (!draining) {
                return;
            }
            parser->skipped_bytes += (uint32_t)parser->fill;
            parser_drop(parser, parser->fill);
            continue;
        }
        len = proto_get_u16(buf + 5);
        if (len > PROTO_MAX_PAYLOAD) {
            parser_fault(parser, PROTO_ERR_BAD_LENGTH);
            continue;
        }
        total = PROTO_HEADER_SIZE + len + PROTO_CRC_SIZE;
        if (parser->fill < total) {
            if (!draining) {
                return;
            }
            parser_fault(parser, PROTO_ERR_TRUNCATED);
            continue;
        }
        if (proto_crc16(buf + 2, PROTO_HEADER_SIZE - 2 + len) !=
            proto_get_u16(buf + PROTO_HEADER_SIZE + len)) {
            parser_fault(parser, PROTO_ERR_BAD_CRC);
            continue;
        }
        frame.type = buf[2];
        frame.seq = proto_get_u16(buf + 3);
        frame.len = (uint16_t)len;
        frame.payload = buf + PROTO_HEADER_SIZE;
        if (parser->on_frame) {
            parser->on_frame(parser->ctx, &frame);
        }
        parser_drop(parser, total);
    }
}

void proto_parser_feed(struct proto_parser *parser, const uint8_t *data, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        /* The scan below consumes any complete frame, so the buffer never overflows. */
        parser->buf[parser->fill++] = data[i];
        if (parser->fill == 1 && data[i] != PROTO_SYNC0) {
            parser->fill = 0;
            parser->skipped_bytes++;
            continue;
        }
        parser_scan(parser, 0);
    }
}

void proto_parser_flush(struct proto_parser *parser)
{
    parser_scan(parser, 1);
}
