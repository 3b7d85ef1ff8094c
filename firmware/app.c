/*
 * The main loop and message handlers. Uses only platform.h and engine.h, so the same file runs on
 * the host, under QEMU, on STM32 and on ESP32. Built with -DMCU_IDS_PROFILE_LAYERS (native engine
 * only) it also answers PROFILE requests from the engine's per-op tick table.
 */
#include "app.h"

#include <string.h>

#include "engine.h"
#include "model_config.h"
#include "platform.h"
#include "protocol.h"
#include "shift.h"

#ifdef MCU_IDS_PROFILE_LAYERS
#include "engine_native.h"
#define APP_LAYER_FLAG PROTO_FLAG_LAYER_PROFILE
#if ENGINE_N_OPS > PROTO_MAX_PROFILE_OPS
#error "the model has more ops than one PROFILE reply can carry; build without profiling"
#endif
#else
#define APP_LAYER_FLAG 0u
#endif

#ifndef MCU_IDS_FIRMWARE_VERSION
#define MCU_IDS_FIRMWARE_VERSION "0.1.0"
#endif

/*
 * Silence on the line for this long ends a partial frame (reported as truncated). A full frame
 * takes 23 ms at 115200 baud; USB serial adapters pause up to about 16 ms between packets.
 */
#define APP_FRAME_GAP_MS 100u
#define APP_READ_CHUNK 64u

/*
 * Bytes the board layer can hold while an inference runs (a UART ring buffer, the host's pty
 * buffer). The harness keeps no more than this in flight. Boards define it; 0 means unknown, and
 * the harness then sends one request at a time.
 */
#ifndef MCU_IDS_RX_BUFFER_BYTES
#define MCU_IDS_RX_BUFFER_BYTES 0u
#endif

#if MCU_IDS_N_FEATURES > PROTO_MAX_PAYLOAD
#error "the model has more input features than one frame can carry"
#endif
#if MCU_IDS_N_FEATURES + PROTO_WINDOW_REQUEST_FIXED > PROTO_MAX_PAYLOAD
#error "the model has more input features than one WINDOW request can carry"
#endif
#if MCU_IDS_N_CLASSES + PROTO_RESULT_OUTPUT_OFFSET > PROTO_MAX_PAYLOAD
#error "the model has more classes than one frame can carry"
#endif

struct app_state {
    struct proto_parser parser;
    uint8_t tx[PROTO_MAX_FRAME];
    int engine_status;
    uint32_t start_ticks;
    uint32_t boot_id;
};

static struct app_state app;

static uint32_t float_bits(float value)
{
    uint32_t bits;

    memcpy(&bits, &value, sizeof bits);
    return bits;
}

/* A 32-bit mixing function (the MurmurHash3 finaliser): nearby tick counts give unrelated ids. */
static uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}

/*
 * The boot id lets the host notice a device reset. Boards have no common source of entropy, so it
 * mixes the ticks at start-up with the ticks when the first HELLO arrives, which depends on when
 * the host connected; it is fixed from then on until the next reset.
 */
static uint32_t app_boot_id(void)
{
    if (app.boot_id == 0) {
        app.boot_id = mix32(app.start_ticks ^ mix32(platform_ticks()));
        if (app.boot_id == 0) {
            app.boot_id = 1;
        }
    }
    return app.boot_id;
}

static void app_send(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len)
{
    size_t size = proto_encode(app.tx, sizeof app.tx, type, seq, payload, len);

    if (size > 0) {
        platform_write(app.tx, size);
    }
}

static void app_send_error(uint8_t code, uint8_t type, uint16_t seq, int32_t detail)
{
    uint8_t payload[PROTO_ERROR_SIZE];

    payload[0] = code;
    payload[1] = type;
    proto_put_u16(payload + 2, seq);
    proto_put_u32(payload + 4, (uint32_t)detail);
    app_send(PROTO_ERROR, seq, payload, sizeof payload);
}

static size_t put_text(uint8_t *dst, const char *text, size_t max_len)
{
    size_t len = text ? strlen(text) : 0;

    if (len > max_len) {
        len = max_len;
    }
    dst[0] = (uint8_t)len;
    if (len > 0) {
        memcpy(dst + 1, text, len);
    }
    return len + 1;
}

static void app_hello(uint16_t seq)
{
    uint8_t payload[PROTO_MAX_PAYLOAD];
    size_t pos = PROTO_HELLO_FIXED_SIZE;

    memset(payload, 0, PROTO_HELLO_FIXED_SIZE);
    payload[0] = PROTO_VERSION;
    payload[1] = (uint8_t)(PROTO_FLAG_WINDOWS | APP_LAYER_FLAG);
    proto_put_u16(payload + 2, (uint16_t)MCU_IDS_N_FEATURES);
    proto_put_u16(payload + 4, (uint16_t)MCU_IDS_N_CLASSES);
    proto_put_u32(payload + 6, float_bits(MCU_IDS_INPUT_SCALE));
    proto_put_u32(payload + 10, (uint32_t)(int32_t)MCU_IDS_INPUT_ZERO_POINT);
    proto_put_u32(payload + 14, float_bits(MCU_IDS_OUTPUT_SCALE));
    proto_put_u32(payload + 18, (uint32_t)(int32_t)MCU_IDS_OUTPUT_ZERO_POINT);
    proto_put_u32(payload + 22, platform_cpu_hz());
    proto_put_u32(payload + 26, platform_tick_hz());
    proto_put_u32(payload + 30, app_boot_id());
    proto_put_u32(payload + 34, (uint32_t)(int32_t)app.engine_status);
    proto_put_u16(payload + 38, (uint16_t)PROTO_MAX_PAYLOAD);
    pos += put_text(payload + pos, platform_board_name(), PROTO_MAX_TEXT);
    pos += put_text(payload + pos, engine_name(), PROTO_MAX_TEXT);
    pos += put_text(payload + pos, platform_tick_kind(), PROTO_MAX_TEXT);
    pos += put_text(payload + pos, MCU_IDS_FIRMWARE_VERSION, PROTO_MAX_TEXT);
    pos += put_text(payload + pos, MCU_IDS_MODEL_SHA256, PROTO_SHA256_HEX_LEN);
    proto_put_u16(payload + pos, (uint16_t)MCU_IDS_RX_BUFFER_BYTES);
    pos += 2;
    app_send(PROTO_HELLO_REPLY, seq, payload, pos);
}

/* The checks every request carrying one input row shares; nonzero when an error was sent. */
static int app_refuse_row(const struct proto_frame *frame, size_t fixed)
{
    if (app.engine_status != 0) {
        app_send_error(PROTO_ERR_ENGINE_INIT, frame->type, frame->seq, app.engine_status);
        return 1;
    }
    if (frame->len != fixed + MCU_IDS_N_FEATURES) {
        app_send_error(PROTO_ERR_INPUT_SIZE, frame->type, frame->seq, MCU_IDS_N_FEATURES);
        return 1;
    }
    return 0;
}

static void app_infer(const struct proto_frame *frame)
{
    uint8_t payload[PROTO_RESULT_OUTPUT_OFFSET + MCU_IDS_N_CLASSES];
    int8_t input[MCU_IDS_N_FEATURES];
    uint32_t start;
    uint32_t spent;
    int status;

    if (app_refuse_row(frame, 0)) {
        return;
    }
    /* A private copy keeps the engine's input aligned and independent of the parser buffer. */
    memcpy(input, frame->payload, sizeof input);
    platform_marker(1);
    start = platform_ticks();
    status = engine_invoke(input, (int8_t *)(payload + PROTO_RESULT_OUTPUT_OFFSET));
    spent = platform_ticks() - start;
    platform_marker(0);
    if (status != 0) {
        app_send_error(PROTO_ERR_ENGINE, frame->type, frame->seq, status);
        return;
    }
    proto_put_u32(payload, spent);
    proto_put_u16(payload + 4, proto_crc16(frame->payload, frame->len));
    payload[PROTO_RESULT_SHIFT_OFFSET] = shift_score(input);
    app_send(PROTO_RESULT, frame->seq, payload, sizeof payload);
}

/*
 * Latency windows: warm-ups, then each window runs the same row back to back with the marker pin
 * raised, so one tick read brackets many inferences and the figure per inference repeats.
 */
static void app_window(const struct proto_frame *frame)
{
    uint8_t payload[PROTO_WINDOW_REPLY_FIXED + 4u * PROTO_MAX_WINDOWS];
    int8_t input[MCU_IDS_N_FEATURES];
    int8_t output[MCU_IDS_N_CLASSES];
    const uint8_t *row = frame->payload + PROTO_WINDOW_REQUEST_FIXED;
    uint16_t warmup;
    uint16_t windows;
    uint16_t per_window;
    uint32_t start;
    uint32_t spent;
    unsigned window;
    unsigned n;
    int status = 0;

    if (app_refuse_row(frame, PROTO_WINDOW_REQUEST_FIXED)) {
        return;
    }
    warmup = proto_get_u16(frame->payload);
    windows = proto_get_u16(frame->payload + 2);
    per_window = proto_get_u16(frame->payload + 4);
    if (warmup > PROTO_MAX_WARMUP || windows == 0 || windows > PROTO_MAX_WINDOWS ||
        per_window == 0 || per_window > PROTO_MAX_PER_WINDOW) {
        app_send_error(PROTO_ERR_BAD_REQUEST, frame->type, frame->seq, 0);
        return;
    }
    memcpy(input, row, sizeof input);
    for (n = 0; n < warmup && status == 0; n++) {
        status = engine_invoke(input, output);
    }
    for (window = 0; window < windows && status == 0; window++) {
        platform_marker(1);
        start = platform_ticks();
        for (n = 0; n < per_window && status == 0; n++) {
            status = engine_invoke(input, output);
        }
        spent = platform_ticks() - start;
        platform_marker(0);
        proto_put_u32(payload + PROTO_WINDOW_REPLY_FIXED + 4u * window, spent);
    }
    if (status != 0) {
        app_send_error(PROTO_ERR_ENGINE, frame->type, frame->seq, status);
        return;
    }
    proto_put_u16(payload, proto_crc16(row, MCU_IDS_N_FEATURES));
    proto_put_u16(payload + 2, windows);
    proto_put_u16(payload + 4, per_window);
    app_send(PROTO_WINDOW_REPLY, frame->seq, payload, PROTO_WINDOW_REPLY_FIXED + 4u * windows);
}

#ifdef MCU_IDS_PROFILE_LAYERS
/* One inference with the engine's per-op tick table filled in; each op costs one extra read. */
static void app_profile(const struct proto_frame *frame)
{
    uint8_t payload[PROTO_PROFILE_REPLY_FIXED + 4u * ENGINE_N_OPS];
    int8_t input[MCU_IDS_N_FEATURES];
    int8_t output[MCU_IDS_N_CLASSES];
    uint32_t read_cost;
    uint32_t start;
    uint32_t spent;
    unsigned op;
    int status;

    if (app_refuse_row(frame, 0)) {
        return;
    }
    memcpy(input, frame->payload, sizeof input);
    start = platform_ticks();
    read_cost = platform_ticks() - start;
    platform_marker(1);
    start = platform_ticks();
    status = engine_invoke(input, output);
    spent = platform_ticks() - start;
    platform_marker(0);
    if (status != 0) {
        app_send_error(PROTO_ERR_ENGINE, frame->type, frame->seq, status);
        return;
    }
    proto_put_u16(payload, proto_crc16(frame->payload, frame->len));
    proto_put_u16(payload + 2, (uint16_t)ENGINE_N_OPS);
    proto_put_u32(payload + 4, spent);
    proto_put_u32(payload + 8, read_cost);
    for (op = 0; op < ENGINE_N_OPS; op++) {
        proto_put_u32(payload + PROTO_PROFILE_REPLY_FIXED + 4u * op, engine_layer_ticks[op]);
    }
    app_send(PROTO_PROFILE_REPLY, frame->seq, payload, sizeof payload);
}
#else
static void app_profile(const struct proto_frame *frame)
{
    /* Only the native engine keeps per-op ticks, and only when built to. */
    app_send_error(PROTO_ERR_UNSUPPORTED, frame->type, frame->seq, 0);
}
#endif

static void app_on_frame(void *ctx, const struct proto_frame *frame)
{
    (void)ctx;
    switch (frame->type) {
    case PROTO_HELLO:
        app_hello(frame->seq);
        break;
    case PROTO_INFER:
        app_infer(frame);
        break;
    case PROTO_WINDOW:
        app_window(frame);
        break;
    case PROTO_PROFILE:
        app_profile(frame);
        break;
    default:
        app_send_error(PROTO_ERR_UNKNOWN_TYPE, frame->type, frame->seq, frame->type);
        break;
    }
}

static void app_on_fault(void *ctx, uint8_t code, uint8_t type, uint16_t seq)
{
    (void)ctx;
    app_send_error(code, type, seq, 0);
}

void app_init(void)
{
    memset(&app, 0, sizeof app);
    app.start_ticks = platform_ticks();
    app.engine_status = engine_init();
    proto_parser_init(&app.parser, app_on_frame, app_on_fault, NULL);
}

void app_poll(void)
{
    uint8_t chunk[APP_READ_CHUNK];
    size_t got = platform_read(chunk, sizeof chunk, APP_FRAME_GAP_MS);

    if (got > 0) {
        proto_parser_feed(&app.parser, chunk, got);
    } else if (proto_parser_pending(&app.parser) > 0) {
        proto_parser_flush(&app.parser);
    }
}

void app_main(void)
{
    platform_init();
    app_init();
    for (;;) {
        app_poll();
    }
}
