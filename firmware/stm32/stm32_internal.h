/* Functions shared between the STM32 startup code, clock set-up and board layer. */
#ifndef MCU_IDS_STM32_INTERNAL_H
#define MCU_IDS_STM32_INTERNAL_H

#include <stdint.h>

#include "board_config.h"

/* Configure the system clock as the board file asks (PLL, flash wait states, bus dividers). */
void stm32_clock_init(void);

/* Serial receive interrupt: moves received bytes into the receive ring buffer. */
void stm32_uart_irq_handler(void);

/*
 * Report a fatal condition as one text line on the serial port, then stop: QEMU exits with
 * `exit_code`, a real board halts with interrupts off.
 */
__attribute__((noreturn)) void stm32_fatal(const char *what, uint32_t value, int exit_code);

#if MCU_IDS_SEMIHOSTING
/* End the emulator with `code` as its exit status (semihosting SYS_EXIT_EXTENDED). */
__attribute__((noreturn)) void stm32_semihost_exit(int code);

/* Write a NUL-terminated text to the emulator's own output (semihosting SYS_WRITE0). */
void stm32_semihost_write(const char *text);
#endif

#endif /* MCU_IDS_STM32_INTERNAL_H */
