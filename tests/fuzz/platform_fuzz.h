/* Control of the fuzzing board layer (platform_fuzz.c) by the fuzz target. */
#ifndef MCU_IDS_PLATFORM_FUZZ_H
#define MCU_IDS_PLATFORM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Serve `data` to platform_read, at most `chunk` bytes per call; forget earlier replies. */
void fuzz_platform_set_input(const uint8_t *data, size_t len, size_t chunk);
int fuzz_platform_input_done(void);
/* Well-formed frames the firmware wrote since the input was set. */
size_t fuzz_platform_replies(void);
/* Malformed frames the firmware wrote since the input was set (must stay 0). */
size_t fuzz_platform_reply_faults(void);

#endif /* MCU_IDS_PLATFORM_FUZZ_H */
