/*
 * The board layer for ESP32 and ESP32-S3 under ESP-IDF (5.1 or later).
 *
 * ESP-IDF's start-up code calls app_main() from firmware/app.c on the main task, which
 * sdkconfig.defaults pins to CPU 0: the cycle counter read here is per core, so the task must
 * not migrate between two readings. The serial port is the board's UART through the ESP-IDF
 * driver; the values in esp32_board.h are rendered from the board file.
 */
#include "platform.h"

#include "driver/gpio.h"
#include "driver/uart.h"
#include "esp_cpu.h"
#include "esp_err.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"

#include "esp32_board.h"

#define ESP32_HZ_PER_MHZ 1000000u

static uint32_t timeout_ticks(uint32_t timeout_ms)
{
    TickType_t ticks = pdMS_TO_TICKS(timeout_ms);

    /* A short timeout must still wait one tick rather than turn into a non-blocking poll. */
    if (timeout_ms > 0 && ticks == 0) {
        ticks = 1;
    }
    return ticks;
}

static void marker_init(void)
{
#if MCU_IDS_MARKER_GPIO >= 0
    ESP_ERROR_CHECK(gpio_reset_pin(MCU_IDS_MARKER_GPIO));
    ESP_ERROR_CHECK(gpio_set_direction(MCU_IDS_MARKER_GPIO, GPIO_MODE_OUTPUT));
    ESP_ERROR_CHECK(gpio_set_level(MCU_IDS_MARKER_GPIO, 0));
#endif
}

void platform_init(void)
{
    const uart_config_t config = {
        .baud_rate = MCU_IDS_UART_BAUD,
        .data_bits = UART_DATA_8_BITS,
        .parity = UART_PARITY_DISABLE,
        .stop_bits = UART_STOP_BITS_1,
        .flow_ctrl = UART_HW_FLOWCTRL_DISABLE,
        .source_clk = UART_SCLK_DEFAULT,
    };

    /* A failure here is a build or board mismatch; ESP_ERROR_CHECK prints it and restarts. */
    ESP_ERROR_CHECK(uart_driver_install(MCU_IDS_UART_NUM, MCU_IDS_UART_RX_BUFFER_BYTES,
                                        MCU_IDS_UART_TX_BUFFER_BYTES, 0, NULL, 0));
    ESP_ERROR_CHECK(uart_param_config(MCU_IDS_UART_NUM, &config));
    ESP_ERROR_CHECK(uart_set_pin(MCU_IDS_UART_NUM, UART_PIN_NO_CHANGE, UART_PIN_NO_CHANGE,
                                 UART_PIN_NO_CHANGE, UART_PIN_NO_CHANGE));
    /*
     * The hardware RX FIFO holds 128 bytes. With the default threshold the interrupt fires late,
     * and while the flash cache is busy (interrupts outside IRAM wait) a fast sender overflows
     * the FIFO. A low threshold empties it into the driver's buffer early; the ISR itself is put
     * in IRAM by CONFIG_UART_ISR_IN_IRAM in sdkconfig.defaults.
     */
    ESP_ERROR_CHECK(uart_set_rx_full_threshold(MCU_IDS_UART_NUM, MCU_IDS_UART_RX_FULL_THRESHOLD));
    ESP_ERROR_CHECK(uart_set_rx_timeout(MCU_IDS_UART_NUM, MCU_IDS_UART_RX_TIMEOUT_SYMBOLS));
    marker_init();
}

size_t platform_read(uint8_t *buf, size_t len, uint32_t timeout_ms)
{
    size_t buffered = 0;
    int got;

    if (len == 0) {
        return 0;
    }
    /* uart_read_bytes waits for all `len` bytes; wait for one, then take what has arrived. */
    got = uart_read_bytes(MCU_IDS_UART_NUM, buf, 1, timeout_ticks(timeout_ms));
    if (got <= 0) {
        return 0;
    }
    if (uart_get_buffered_data_len(MCU_IDS_UART_NUM, &buffered) != ESP_OK || buffered == 0) {
        return 1;
    }
    if (buffered > len - 1) {
        buffered = len - 1;
    }
    got = uart_read_bytes(MCU_IDS_UART_NUM, buf + 1, buffered, 0);
    return 1 + (got > 0 ? (size_t)got : 0);
}

void platform_write(const uint8_t *buf, size_t len)
{
    size_t sent = 0;

    while (sent < len) {
        int n = uart_write_bytes(MCU_IDS_UART_NUM, buf + sent, len - sent);

        if (n < 0) {
            return; /* only on a bad argument, which the driver has already logged */
        }
        sent += (size_t)n;
    }
}

uint32_t platform_ticks(void)
{
    return (uint32_t)esp_cpu_get_cycle_count();
}

uint32_t platform_tick_hz(void)
{
    return platform_cpu_hz();
}

uint32_t platform_cpu_hz(void)
{
    /* Power management (frequency scaling) stays disabled, so the configured clock holds. */
    return (uint32_t)CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ * ESP32_HZ_PER_MHZ;
}

const char *platform_board_name(void)
{
    return MCU_IDS_BOARD_NAME;
}

const char *platform_tick_kind(void)
{
    return "cpu-cycles";
}

void platform_marker(int level)
{
#if MCU_IDS_MARKER_GPIO >= 0
    gpio_set_level(MCU_IDS_MARKER_GPIO, level ? 1 : 0);
#else
    (void)level;
#endif
}
