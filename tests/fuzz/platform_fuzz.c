/*
 * A board layer for fuzzing the firmware on the host: reads come from a buffer set by the fuzz
 * target, writes are checked to be well-formed frames. No I/O, no time: ticks count calls.
 */
#include <stdlib.h>
#include <string.h>

#include "platform.h"
#include "platform_fuzz.h"
#include "protocol.h"

static const uint8_t *input;
static size_t input_len;
static size_t input_pos;
static size_t read_chunk = 1;
static uint32_t fake_ticks;
static struct proto_parser reply_parser;
static size_t replies;
static size_t reply_faults;

static void on_reply(void *ctx, const struct proto_frame *frame)
{
    (void)ctx;
    /* Replies have the high bit of the type set, and nothing larger than a frame allows. */
    if ((frame->type & 0x80u) == 0 || frame->len > PROTO_MAX_PAYLOAD) {
        abort();
    }
    replies++;
}

static void on_reply_fault(void *ctx, uint8_t code, uint8_t type, uint16_t seq)
{
    (void)ctx;
    (void)code;
    (void)type;
    (void)seq;
    reply_faults++;
}

void fuzz_platform_set_input(const uint8_t *data, size_t len, size_t chunk)
{
    input = data;
    input_len = len;
    input_pos = 0;
    read_chunk = chunk == 0 ? 1 : chunk;
    replies = 0;
    reply_faults = 0;
    proto_parser_init(&reply_parser, on_reply, on_reply_fault, NULL);
}

int fuzz_platform_input_done(void)
{
    return input_pos >= input_len;
}

size_t fuzz_platform_replies(void)
{
    return replies;
}

size_t fuzz_platform_reply_faults(void)
{
    proto_parser_flush(&reply_parser);
    return reply_faults;
}

void platform_init(void)
{
}

size_t platform_read(uint8_t *buf, size_t len, uint32_t timeout_ms)
{
    size_t take = input_len - input_pos;

    (void)timeout_ms;
    if (take > len) {
        take = len;
    }
    if (take > read_chunk) {
        take = read_chunk;
    }
    if (take > 0) {
        memcpy(buf, input + input_pos, take);
        input_pos += take;
    }
    return take;
}

void platform_write(const uint8_t *buf, size_t len)
{
    proto_parser_feed(&reply_parser, buf, len);
}

uint32_t platform_ticks(void)
{
    return fake_ticks++;
}

uint32_t platform_tick_hz(void)
{
    return 1000u;
}

uint32_t platform_cpu_hz(void)
{
    return 1000u;
}

const char *platform_board_name(void)
{
    return "fuzz";
}

const char *platform_tick_kind(void)
{
    return "calls";
}

void platform_marker(int level)
{
    (void)level;
}
