/*
 * The board layer for STM32 boards (Nucleo F446RE and L4R5ZI, and the STM32F405 that QEMU
 * emulates). Board differences come from board_config.h, rendered from the board file.
 *
 * Serial: polled transmit; receive through an interrupt into a ring buffer, so bytes that arrive
 * while an inference runs wait there instead of overrunning the one-byte data register.
 * Time: SysTick keeps a 64-bit count of CPU clock ticks (for timeouts, and for platform_ticks()
 * where no cycle counter works, as under QEMU); DWT CYCCNT counts cycles on real boards.
 */
#include <stddef.h>
#include <stdint.h>

#include "platform.h"
#include "stm32/stm32_internal.h"
#include "stm32/stm32_regs.h"

/* Power of two so that the free-running indices can be masked. */
#define RX_BUFFER_SIZE 2048u
#define RX_BUFFER_MASK (RX_BUFFER_SIZE - 1u)
#if (RX_BUFFER_SIZE & RX_BUFFER_MASK) != 0
#error "RX_BUFFER_SIZE must be a power of two"
#endif

/* The longest SysTick period, so its interrupt disturbs a timed inference as rarely as possible. */
#define SYSTICK_PERIOD (SYST_RVR_MAX + 1u)
#define TICKS_PER_MS (MCU_IDS_CPU_HZ / 1000u)

static volatile uint8_t rx_buffer[RX_BUFFER_SIZE];
static volatile uint32_t rx_head; /* written by the interrupt only */
static volatile uint32_t rx_tail; /* written by platform_read only */
static volatile uint32_t rx_dropped;
static volatile uint32_t systick_wraps;

void SysTick_Handler(void)
{
    systick_wraps++;
}

/* CPU clock ticks since platform_init(), from the SysTick wrap count and its down-counter. */
static uint64_t systick_now(void)
{
    uint32_t wraps;
    uint32_t value;
    /* If SysTick wrapped between the two reads, its interrupt ran and `wraps` moved: retry. */
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return (uint64_t)wraps * SYSTICK_PERIOD + (SYSTICK_PERIOD - 1u - value);
}

static void systick_init(void)
{
    SYST_RVR = SYSTICK_PERIOD - 1u;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE_CPU | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

static void cycle_counter_init(void)
{
#if MCU_IDS_TICKS_DWT
    DEMCR |= DEMCR_TRCENA;
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
#endif
}

static void gpio_set_mode(uint32_t port, uint32_t pin, uint32_t mode)
{
    uint32_t base = GPIO_PORT_BASE(port);
    GPIO_MODER(base) = (GPIO_MODER(base) & ~(3u << (2u * pin))) | (mode << (2u * pin));
    GPIO_OSPEEDR(base) |= GPIO_SPEED_HIGH << (2u * pin);
}

static void gpio_set_alternate(uint32_t port, uint32_t pin, uint32_t af)
{
    uint32_t base = GPIO_PORT_BASE(port);
    uint32_t shift = 4u * (pin % 8u);
    GPIO_AFR(base, pin / 8u) = (GPIO_AFR(base, pin / 8u) & ~(0xFu << shift)) | (af << shift);
    gpio_set_mode(port, pin, GPIO_MODE_AF);
}

static void uart_pins_init(void)
{
#if MCU_IDS_UART_NEEDS_VDDIO2
    /* Port G pins 2..15 are powered from VDDIO2, which is isolated until IOSV is set. */
    RCC_PWRENR |= RCC_PWREN;
    (void)RCC_PWRENR;
    PWR_CR2 |= PWR_CR2_IOSV;
#endif
    RCC_GPIOENR |= (1u << MCU_IDS_UART_TX_PORT) | (1u << MCU_IDS_UART_RX_PORT);
    (void)RCC_GPIOENR;
    gpio_set_alternate(MCU_IDS_UART_TX_PORT, MCU_IDS_UART_TX_PIN, MCU_IDS_UART_AF);
    gpio_set_alternate(MCU_IDS_UART_RX_PORT, MCU_IDS_UART_RX_PIN, MCU_IDS_UART_AF);
    uint32_t rx_base = GPIO_PORT_BASE(MCU_IDS_UART_RX_PORT);
    GPIO_PUPDR(rx_base) = (GPIO_PUPDR(rx_base) & ~(3u << (2u * MCU_IDS_UART_RX_PIN))) |
                          (GPIO_PULL_UP << (2u * MCU_IDS_UART_RX_PIN));
}

static void marker_init(void)
{
#if MCU_IDS_HAS_MARKER
    RCC_GPIOENR |= 1u << MCU_IDS_MARKER_PORT;
    (void)RCC_GPIOENR;
    enum { GPIO_MODE_OUTPUT = 1u };
    gpio_set_mode(MCU_IDS_MARKER_PORT, MCU_IDS_MARKER_PIN, GPIO_MODE_OUTPUT);
    platform_marker(0);
#endif
}

static void uart_init(void)
{
    MCU_IDS_UART_RCC_ENR |= 1u << MCU_IDS_UART_RCC_BIT;
    (void)MCU_IDS_UART_RCC_ENR;
    uart_pins_init();
    USART_BRR(MCU_IDS_UART_BASE) = MCU_IDS_UART_BRR;
    USART_CR1(MCU_IDS_UART_BASE) =
        USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE | USART_CR1_UE;
    NVIC_ISER(MCU_IDS_UART_IRQN / 32u) = 1u << (MCU_IDS_UART_IRQN % 32u);
}

static void rx_push(uint8_t byte)
{
    uint32_t head = rx_head;
    if (head - rx_tail >= RX_BUFFER_SIZE) {
        rx_dropped++;
        return;
    }
    rx_buffer[head & RX_BUFFER_MASK] = byte;
    rx_head = head + 1u;
}

void stm32_uart_irq_handler(void)
{
#if defined(MCU_IDS_STM32F4)
    /* Reading SR then DR clears both RXNE and an overrun. */
    uint32_t status = USART_SR(MCU_IDS_UART_BASE);
    if (status & (USART_SR_RXNE | USART_SR_ORE)) {
        rx_push((uint8_t)USART_DR(MCU_IDS_UART_BASE));
    }
#else
    uint32_t status = USART_ISR(MCU_IDS_UART_BASE);
    if (status & USART_ISR_ORE) {
        USART_ICR(MCU_IDS_UART_BASE) = USART_ICR_ORECF;
        rx_dropped++;
    }
    if (status & USART_ISR_RXNE) {
        rx_push((uint8_t)USART_RDR(MCU_IDS_UART_BASE));
    }
#endif
}

static void uart_put(uint8_t byte)
{
#if defined(MCU_IDS_STM32F4)
    while ((USART_SR(MCU_IDS_UART_BASE) & USART_SR_TXE) == 0) {
    }
    USART_DR(MCU_IDS_UART_BASE) = byte;
#else
    while ((USART_ISR(MCU_IDS_UART_BASE) & USART_ISR_TXE) == 0) {
    }
    USART_TDR(MCU_IDS_UART_BASE) = byte;
#endif
}

static void uart_flush(void)
{
#if defined(MCU_IDS_STM32F4)
    while ((USART_SR(MCU_IDS_UART_BASE) & USART_SR_TC) == 0) {
    }
#else
    while ((USART_ISR(MCU_IDS_UART_BASE) & USART_ISR_TC) == 0) {
    }
#endif
}

void platform_init(void)
{
    stm32_clock_init();
    systick_init();
    cycle_counter_init();
    marker_init();
    uart_init();
}

size_t platform_read(uint8_t *buf, size_t len, uint32_t timeout_ms)
{
    uint64_t start = systick_now();
    uint64_t limit = (uint64_t)timeout_ms * TICKS_PER_MS;
    while (rx_head == rx_tail) {
        if (systick_now() - start >= limit) {
            return 0;
        }
        /* Sleep until the next interrupt: a received byte or a SysTick wrap. */
        __asm__ volatile("wfi");
    }
    size_t count = 0;
    uint32_t tail = rx_tail;
    while (count < len && tail != rx_head) {
        buf[count++] = rx_buffer[tail & RX_BUFFER_MASK];
        tail++;
    }
    rx_tail = tail;
    return count;
}

void platform_write(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uart_put(buf[i]);
    }
}

uint32_t platform_ticks(void)
{
#if MCU_IDS_TICKS_DWT
    return DWT_CYCCNT;
#else
    return (uint32_t)systick_now();
#endif
}

uint32_t platform_tick_hz(void)
{
    return MCU_IDS_CPU_HZ;
}

uint32_t platform_cpu_hz(void)
{
    return MCU_IDS_CPU_HZ;
}

const char *platform_board_name(void)
{
    return MCU_IDS_BOARD_NAME;
}

const char *platform_tick_kind(void)
{
    return MCU_IDS_TICK_KIND;
}

void platform_marker(int level)
{
#if MCU_IDS_HAS_MARKER
    uint32_t bit = 1u << MCU_IDS_MARKER_PIN;
    /* BSRR: the low half sets a pin, the high half resets it, in one store. */
    GPIO_BSRR(GPIO_PORT_BASE(MCU_IDS_MARKER_PORT)) = level ? bit : bit << 16;
#else
    (void)level;
#endif
}

static size_t append_text(char *line, size_t at, size_t size, const char *text)
{
    while (*text && at + 1u < size) {
        line[at++] = *text++;
    }
    line[at] = '\0';
    return at;
}

static size_t append_hex32(char *line, size_t at, size_t size, uint32_t value)
{
    static const char digits[] = "0123456789abcdef";
    char text[9];
    for (int i = 0; i < 8; i++) {
        text[i] = digits[(value >> (28 - 4 * i)) & 0xFu];
    }
    text[8] = '\0';
    return append_text(line, at, size, text);
}

void stm32_fatal(const char *what, uint32_t value, int exit_code)
{
    __asm__ volatile("cpsid i" ::: "memory");
    /* One text line; the host sees it where it expected a frame and reports it verbatim. */
    enum { FATAL_LINE_SIZE = 96 };
    char line[FATAL_LINE_SIZE];
    size_t length = append_text(line, 0, sizeof(line), "\r\nFATAL ");
    length = append_text(line, length, sizeof(line), what);
    length = append_text(line, length, sizeof(line), " 0x");
    length = append_hex32(line, length, sizeof(line), value);
    length = append_text(line, length, sizeof(line), "\r\n");
    platform_write((const uint8_t *)line, length);
    uart_flush();
#if MCU_IDS_SEMIHOSTING
    /* QEMU closes the serial port as it exits, losing unread bytes: repeat the line in its log. */
    stm32_semihost_write(line);
    stm32_semihost_exit(exit_code);
#else
    (void)exit_code;
    for (;;) {
        __asm__ volatile("wfi");
    }
#endif
}
