/*
 * The board layer: everything the shared firmware needs from a board.
 *
 * Each board provides one platform_<name>.c implementing these functions; the main loop, the
 * protocol and the engines never touch hardware directly.
 */
#ifndef MCU_IDS_PLATFORM_H
#define MCU_IDS_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bring up clocks, the serial port and the cycle counter. Called once before anything else. */
void platform_init(void);

/*
 * Read at most `len` bytes from the serial port. Blocks until at least one byte arrives or
 * `timeout_ms` passes; returns the number of bytes read (0 on timeout).
 */
size_t platform_read(uint8_t *buf, size_t len, uint32_t timeout_ms);

/* Write `len` bytes to the serial port; returns when they are queued for sending. */
void platform_write(const uint8_t *buf, size_t len);

/* A free-running counter for timing inferences; wraps, so only differences are meaningful. */
uint32_t platform_ticks(void);

/* Frequency of platform_ticks() in Hz. */
uint32_t platform_tick_hz(void);

/* CPU clock in Hz, as configured (reported in the handshake). */
uint32_t platform_cpu_hz(void);

/* The board name as in the boards/ folder. */
const char *platform_board_name(void);

/* What platform_ticks() counts, e.g. "cpu-cycles", "ns", "emulated-instructions". */
const char *platform_tick_kind(void);

/* Raise (1) or lower (0) the marker pin that gates an external energy meter; may do nothing. */
void platform_marker(int level);

#ifdef __cplusplus
}
#endif

#endif /* MCU_IDS_PLATFORM_H */
