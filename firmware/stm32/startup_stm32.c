/*
 * Reset and exception entry for the STM32 boards: vector table, memory set-up, FPU enable, and
 * a HardFault handler that says what happened before stopping.
 */
#include <stddef.h>
#include <stdint.h>

#include "stm32_internal.h"
#include "stm32_regs.h"

/* Provided by the linker script. */
extern uint32_t _estack;
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;
extern void (*__preinit_array_start[])(void);
extern void (*__preinit_array_end[])(void);
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);

void app_main(void);
void Reset_Handler(void);
void HardFault_Handler(void);
void SysTick_Handler(void);

#define CORE_VECTORS 16u
#define VECTOR_COUNT (CORE_VECTORS + MCU_IDS_IRQ_COUNT)
#define HARDFAULT_EXIT_CODE 3
#define RETURNED_EXIT_CODE 4

/* Any interrupt nobody asked for is a bug: report it like a fault instead of hanging silently. */
static void unexpected_interrupt(void)
{
    uint32_t active;
    __asm__ volatile("mrs %0, ipsr" : "=r"(active));
    stm32_fatal("unexpected interrupt", active, HARDFAULT_EXIT_CODE);
}

/* Every slot defaults to unexpected_interrupt; the few handled ones override it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
__attribute__((section(".isr_vector"), used)) void (*const vector_table[VECTOR_COUNT])(void) = {
    [0] = (void (*)(void))(uintptr_t)&_estack,
    [1] = Reset_Handler,
    [2 ... VECTOR_COUNT - 1] = unexpected_interrupt,
    [3] = HardFault_Handler,
    [15] = SysTick_Handler,
    [CORE_VECTORS + MCU_IDS_UART_IRQN] = stm32_uart_irq_handler,
};
#pragma GCC diagnostic pop

static void run_constructors(void)
{
    /* C++ glue (TFLM) may have static objects; -nostartfiles leaves their constructors to us. */
    for (void (**fn)(void) = __preinit_array_start; fn < __preinit_array_end; fn++) {
        (*fn)();
    }
    for (void (**fn)(void) = __init_array_start; fn < __init_array_end; fn++) {
        (*fn)();
    }
}

void Reset_Handler(void)
{
    /* The FPU must be on before any floating-point instruction, including in memcpy. */
    SCB_CPACR |= SCB_CPACR_CP10_CP11_FULL;
    __asm__ volatile("dsb\n\tisb" ::: "memory");

    uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    SCB_VTOR = (uint32_t)(uintptr_t)vector_table;
    __asm__ volatile("dsb\n\tisb" ::: "memory");

    run_constructors();
    app_main();
    stm32_fatal("app_main returned", 0, RETURNED_EXIT_CODE);
}

/* Called from the HardFault entry below with the stacked exception frame. */
__attribute__((used)) static void hardfault_report(const uint32_t *frame)
{
    enum { FRAME_PC = 6 };
    stm32_fatal("hard fault", frame[FRAME_PC], HARDFAULT_EXIT_CODE);
}

/* Pick the stack that was in use when the fault hit, then report from C. */
__attribute__((naked)) void HardFault_Handler(void)
{
    __asm__ volatile("tst lr, #4\n\t"
                     "ite eq\n\t"
                     "mrseq r0, msp\n\t"
                     "mrsne r0, psp\n\t"
                     "b hardfault_report\n\t");
}

#if MCU_IDS_SEMIHOSTING
/* Semihosting call numbers (Arm semihosting specification 2.0). */
enum { SYS_WRITE0 = 0x04, SYS_EXIT_EXTENDED = 0x20, ADP_STOPPED_APPLICATION_EXIT = 0x20026 };

static void semihost_call(uint32_t operation, const void *argument)
{
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}

void stm32_semihost_write(const char *text)
{
    semihost_call(SYS_WRITE0, text);
}

void stm32_semihost_exit(int code)
{
    /* SYS_EXIT_EXTENDED takes a reason and a status, so QEMU exits with `code`. */
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    semihost_call(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}
#endif
