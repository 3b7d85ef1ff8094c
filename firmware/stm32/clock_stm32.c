/*
 * System clock set-up from the values in board_config.h (rendered from the board file, which the
 * build checks: PLL ranges, resulting frequency, flash wait states).
 *
 * MCU_IDS_CLOCK_RESET leaves the reset clock alone; the emulated board uses it because QEMU does
 * not model the clock tree and its RCC never reports a PLL as ready.
 */
#include "stm32_internal.h"
#include "stm32_regs.h"

#if !MCU_IDS_CLOCK_RESET

static void wait_set(volatile uint32_t *reg, uint32_t mask)
{
    while ((*reg & mask) == 0) {
    }
}

static void set_flash_wait_states(void)
{
    FLASH_ACR = (FLASH_ACR & ~FLASH_ACR_LATENCY_MASK) | MCU_IDS_FLASH_WAIT_STATES |
                FLASH_ACR_PRFTEN | FLASH_ACR_ICEN | FLASH_ACR_DCEN;
    /* The new latency must be in effect before the clock goes up. */
    while ((FLASH_ACR & FLASH_ACR_LATENCY_MASK) != MCU_IDS_FLASH_WAIT_STATES) {
    }
}

static uint32_t pll_source(void)
{
#if MCU_IDS_CLOCK_HSE_BYPASS
    /* The ST-LINK feeds its 8 MHz clock into OSC_IN; bypass the crystal driver. */
    RCC_CR |= RCC_CR_HSEBYP | RCC_CR_HSEON;
    wait_set(&RCC_CR, RCC_CR_HSERDY);
    return RCC_PLLCFGR_SRC_HSE;
#else
    RCC_CR |= RCC_CR_HSION;
    wait_set(&RCC_CR, RCC_CR_HSIRDY);
    return RCC_PLLCFGR_SRC_HSI;
#endif
}

static void switch_to_pll(void)
{
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL;
    while (((RCC_CFGR >> RCC_CFGR_SWS_SHIFT) & RCC_CFGR_SW_MASK) != RCC_CFGR_SW_PLL) {
    }
}

static void set_bus_dividers(void)
{
    uint32_t cfgr = RCC_CFGR;
    cfgr &= ~((RCC_CFGR_PPRE_MASK << RCC_CFGR_PPRE1_SHIFT) |
              (RCC_CFGR_PPRE_MASK << RCC_CFGR_PPRE2_SHIFT));
    cfgr |= ((uint32_t)MCU_IDS_APB1_PRESCALER_BITS << RCC_CFGR_PPRE1_SHIFT) |
            ((uint32_t)MCU_IDS_APB2_PRESCALER_BITS << RCC_CFGR_PPRE2_SHIFT);
    RCC_CFGR = cfgr;
}

#if defined(MCU_IDS_STM32F4)

void stm32_clock_init(void)
{
    RCC_PWRENR |= RCC_PWREN;
    (void)RCC_PWRENR;
    uint32_t source = pll_source();
    RCC_PLLCFGR = (RCC_PLLCFGR & ~RCC_PLLCFGR_MNP_SRC_MASK) |
                  ((uint32_t)MCU_IDS_PLL_M << RCC_PLLCFGR_M_SHIFT) |
                  ((uint32_t)MCU_IDS_PLL_N << RCC_PLLCFGR_N_SHIFT) |
                  ((uint32_t)MCU_IDS_PLL_DIV_BITS << RCC_PLLCFGR_P_SHIFT) | source;
    RCC_CR |= RCC_CR_PLLON;
    wait_set(&RCC_CR, RCC_CR_PLLRDY);
#if MCU_IDS_POWER_BOOST
    /* Above 168 MHz the F446 needs over-drive, switched on while the PLL runs (RM0390 5.1.4). */
    PWR_CR |= PWR_CR_ODEN;
    wait_set(&PWR_CSR, PWR_CSR_ODRDY);
    PWR_CR |= PWR_CR_ODSWEN;
    wait_set(&PWR_CSR, PWR_CSR_ODSWRDY);
#endif
    set_flash_wait_states();
    set_bus_dividers();
    switch_to_pll();
}

#else /* STM32L4 */

/* At least 1 us at the new clock before the AHB divider may drop from 2 to 1 (RM0432 6.2.9). */
#define BOOST_SETTLE_LOOPS (MCU_IDS_CPU_HZ / 1000000u)

void stm32_clock_init(void)
{
    RCC_PWRENR |= RCC_PWREN;
    (void)RCC_PWRENR;
#if MCU_IDS_POWER_BOOST
    PWR_CR5 &= ~PWR_CR5_R1MODE;
    while (PWR_SR2 & PWR_SR2_VOSF) {
    }
#endif
    uint32_t source = pll_source();
    set_flash_wait_states();
    RCC_PLLCFGR = source | ((uint32_t)(MCU_IDS_PLL_M - 1u) << RCC_PLLCFGR_M_SHIFT) |
                  ((uint32_t)MCU_IDS_PLL_N << RCC_PLLCFGR_N_SHIFT) | RCC_PLLCFGR_REN |
                  ((uint32_t)MCU_IDS_PLL_DIV_BITS << RCC_PLLCFGR_R_SHIFT);
    RCC_CR |= RCC_CR_PLLON;
    wait_set(&RCC_CR, RCC_CR_PLLRDY);
    set_bus_dividers();
#if MCU_IDS_POWER_BOOST
    /* Range 1 boost: step through AHB/2 so the supply does not see the full jump at once. */
    RCC_CFGR = (RCC_CFGR & ~(RCC_CFGR_HPRE_MASK << RCC_CFGR_HPRE_SHIFT)) |
               (RCC_CFGR_HPRE_DIV2 << RCC_CFGR_HPRE_SHIFT);
    switch_to_pll();
    for (volatile uint32_t i = 0; i < BOOST_SETTLE_LOOPS; i++) {
    }
    RCC_CFGR &= ~(RCC_CFGR_HPRE_MASK << RCC_CFGR_HPRE_SHIFT);
#else
    switch_to_pll();
#endif
}

#endif /* family */

#else /* MCU_IDS_CLOCK_RESET */

void stm32_clock_init(void)
{
}

#endif
