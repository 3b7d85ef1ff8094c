/*
 * Test driver for firmware/protocol.c, built with the sanitizers by tests/test_protocol_c.py.
 *
 *   parser_test_main parse CHUNK   feed stdin to the parser CHUNK bytes at a time, then flush;
 *                                  print one line per event: "FRAME type seq len hex" or
 *                                  "FAULT code type seq"
 *   parser_test_main encode TYPE SEQ HEX   print the frame carrying payload HEX, in hex
 *   parser_test_main crc TEXT              print the CRC-16 of TEXT's bytes
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

#define INPUT_LIMIT (1u << 20)

static void print_hex(const uint8_t *data, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        printf("%02x", data[i]);
    }
}

static void on_frame(void *ctx, const struct proto_frame *frame)
{
    (void)ctx;
    printf("FRAME %u %u %u ", frame->type, frame->seq, frame->len);
    print_hex(frame->payload, frame->len);
    printf("\n");
}

static void on_fault(void *ctx, uint8_t code, uint8_t type, uint16_t seq)
{
    (void)ctx;
    printf("FAULT %u %u %u\n", code, type, seq);
}

static int run_parse(size_t chunk)
{
    static uint8_t input[INPUT_LIMIT];
    struct proto_parser parser;
    size_t len = fread(input, 1, sizeof input, stdin);
    size_t pos;

    proto_parser_init(&parser, on_frame, on_fault, NULL);
    for (pos = 0; pos < len; pos += chunk) {
        size_t take = len - pos < chunk ? len - pos : chunk;
        uint8_t piece[PROTO_MAX_FRAME * 4];

        /* A private copy per chunk, so ASan sees any read past what was fed. */
        memcpy(piece, input + pos, take);
        proto_parser_feed(&parser, piece, take);
    }
    proto_parser_flush(&parser);
    printf("PENDING %u\n", (unsigned)proto_parser_pending(&parser));
    return 0;
}

static int run_encode(unsigned type, unsigned seq, const char *hex)
{
    uint8_t payload[PROTO_MAX_PAYLOAD + 16];
    uint8_t frame[PROTO_MAX_FRAME + 16];
    size_t len = strlen(hex) / 2;
    size_t i;
    size_t size;

    if (len > sizeof payload) {
        return 2;
    }
    for (i = 0; i < len; i++) {
        unsigned byte;

        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) {
            return 2;
        }
        payload[i] = (uint8_t)byte;
    }
    size = proto_encode(frame, sizeof frame, (uint8_t)type, (uint16_t)seq, payload, len);
    print_hex(frame, size);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "parse") == 0) {
        size_t chunk = (size_t)strtoul(argv[2], NULL, 10);

        if (chunk == 0 || chunk > PROTO_MAX_FRAME * 4) {
            return 2;
        }
        return run_parse(chunk);
    }
    if (argc == 5 && strcmp(argv[1], "encode") == 0) {
        return run_encode((unsigned)strtoul(argv[2], NULL, 0), (unsigned)strtoul(argv[3], NULL, 0),
                          argv[4]);
    }
    if (argc == 3 && strcmp(argv[1], "crc") == 0) {
        printf("%04x\n", proto_crc16((const uint8_t *)argv[2], strlen(argv[2])));
        return 0;
    }
    fprintf(stderr, "usage: parser_test_main parse CHUNK | encode TYPE SEQ HEX | crc TEXT\n");
    return 2;
}
