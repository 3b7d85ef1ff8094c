/*
 * The serial protocol between the benchmark harness and the firmware: frame layout, message
 * types, error codes, CRC and an incremental frame parser. The wire format is in PROTOCOL.md.
 *
 * Portable C99, no dynamic allocation: the parser keeps at most one maximal frame in its buffer.
 */
#ifndef MCU_IDS_PROTOCOL_H
#define MCU_IDS_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PROTO_VERSION 1u
#define PROTO_SYNC0 0xA5u
#define PROTO_SYNC1 0x5Au
/* sync (2) + type (1) + seq (2) + payload length (2) */
#define PROTO_HEADER_SIZE 7u
#define PROTO_CRC_SIZE 2u
#define PROTO_MAX_PAYLOAD 256u
#define PROTO_MAX_FRAME (PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD + PROTO_CRC_SIZE)
/* Longest text field of a HELLO reply other than the model hash; longer strings are cut. */
#define PROTO_MAX_TEXT 32u
#define PROTO_SHA256_HEX_LEN 64u

/* Message types: requests from the host have the high bit clear, replies have it set. */
enum proto_type {
    PROTO_HELLO = 0x01,
    PROTO_INFER = 0x02,
    PROTO_WINDOW = 0x03,
    PROTO_PROFILE = 0x04,
    PROTO_HELLO_REPLY = 0x81,
    PROTO_RESULT = 0x82,
    PROTO_WINDOW_REPLY = 0x83,
    PROTO_PROFILE_REPLY = 0x84,
    PROTO_ERROR = 0xEE
};

enum proto_error {
    PROTO_ERR_BAD_CRC = 1,
    PROTO_ERR_BAD_LENGTH = 2,
    PROTO_ERR_UNKNOWN_TYPE = 3,
    PROTO_ERR_INPUT_SIZE = 4,
    PROTO_ERR_ENGINE = 5,
    PROTO_ERR_TRUNCATED = 6,
    PROTO_ERR_ENGINE_INIT = 7,
    PROTO_ERR_UNSUPPORTED = 8,
    PROTO_ERR_BAD_REQUEST = 9
};

/* Offsets inside the HELLO reply payload (all little-endian). */
#define PROTO_HELLO_FIXED_SIZE 40u
/* HELLO flags: which optional requests the firmware answers. */
#define PROTO_FLAG_WINDOWS 0x01u
#define PROTO_FLAG_LAYER_PROFILE 0x02u
/*
 * Offsets inside the RESULT payload: ticks (u32), CRC-16 of the input it ran on (u16), the
 * distribution-shift score (u8), outputs.
 */
#define PROTO_RESULT_SHIFT_OFFSET 6u
#define PROTO_RESULT_OUTPUT_OFFSET 7u
/* ERROR payload: code (u8), type answered (u8), seq answered (u16), detail (i32). */
#define PROTO_ERROR_SIZE 8u
/*
 * WINDOW request: warm-up inferences (u16), windows (u16), inferences per window (u16), then one
 * input row. Its reply: CRC-16 of the row (u16), windows (u16), inferences per window (u16), then
 * the ticks of each window (u32). The bounds keep the reply in one frame and a window short.
 */
#define PROTO_WINDOW_REQUEST_FIXED 6u
#define PROTO_WINDOW_REPLY_FIXED 6u
#define PROTO_MAX_WINDOWS ((PROTO_MAX_PAYLOAD - PROTO_WINDOW_REPLY_FIXED) / 4u)
#define PROTO_MAX_PER_WINDOW 1000u
#define PROTO_MAX_WARMUP 1000u
/*
 * PROFILE request: one input row. Its reply: CRC-16 of the row (u16), op count (u16), ticks of the
 * whole engine_invoke (u32), ticks of one platform_ticks() read (u32), then each op's ticks (u32).
 */
#define PROTO_PROFILE_REPLY_FIXED 12u
#define PROTO_MAX_PROFILE_OPS ((PROTO_MAX_PAYLOAD - PROTO_PROFILE_REPLY_FIXED) / 4u)

struct proto_frame {
    uint8_t type;
    uint16_t seq;
    uint16_t len;
    const uint8_t *payload;
};

/* Called for every frame whose CRC checks; `frame->payload` is valid only during the call. */
typedef void (*proto_frame_fn)(void *ctx, const struct proto_frame *frame);
/* Called for a frame that was seen but cannot be used (bad CRC, oversize, truncated). */
typedef void (*proto_fault_fn)(void *ctx, uint8_t code, uint8_t type, uint16_t seq);

struct proto_parser {
    uint8_t buf[PROTO_MAX_FRAME];
    size_t fill;
    uint32_t skipped_bytes;
    proto_frame_fn on_frame;
    proto_fault_fn on_fault;
    void *ctx;
};

uint16_t proto_crc16_update(uint16_t crc, const uint8_t *data, size_t len);
/* CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor. */
uint16_t proto_crc16(const uint8_t *data, size_t len);

void proto_put_u16(uint8_t *dst, uint16_t value);
void proto_put_u32(uint8_t *dst, uint32_t value);
uint16_t proto_get_u16(const uint8_t *src);
uint32_t proto_get_u32(const uint8_t *src);

/*
 * Write one frame into `out` (capacity `cap`); returns its size, or 0 if the payload is longer
 * than PROTO_MAX_PAYLOAD or the frame does not fit.
 */
size_t proto_encode(uint8_t *out, size_t cap, uint8_t type, uint16_t seq, const uint8_t *payload,
                    size_t len);

void proto_parser_init(struct proto_parser *parser, proto_frame_fn on_frame,
                       proto_fault_fn on_fault, void *ctx);
/* Feed received bytes; the callbacks run for every frame or fault completed by them. */
void proto_parser_feed(struct proto_parser *parser, const uint8_t *data, size_t len);
/* The line went quiet: whatever is buffered will never complete; report it and drain it. */
void proto_parser_flush(struct proto_parser *parser);
/* Number of bytes held while waiting for the rest of a frame. */
size_t proto_parser_pending(const struct proto_parser *parser);

#ifdef __cplusplus
}
#endif

#endif /* MCU_IDS_PROTOCOL_H */
