/*
 * Register addresses and bits used by the STM32 board layer, written from the ARMv7-M
 * architecture manual and the reference manuals RM0390 (STM32F446), RM0090 (STM32F405) and
 * RM0432 (STM32L4R5). Only what this firmware touches is defined.
 */
#ifndef MCU_IDS_STM32_REGS_H
#define MCU_IDS_STM32_REGS_H

#include <stdint.h>

#include "board_config.h"

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* Cortex-M4 system control space. */
#define SCB_VTOR REG32(0xE000ED08u)
#define SCB_CPACR REG32(0xE000ED88u)
#define SCB_CPACR_CP10_CP11_FULL (0xFu << 20)
#define SCB_CFSR REG32(0xE000ED28u)
#define SCB_HFSR REG32(0xE000ED2Cu)

#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)
#define SYST_RVR_MAX 0x00FFFFFFu

#define NVIC_ISER(n) REG32(0xE000E100u + 4u * (n))

#define DEMCR REG32(0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL REG32(0xE0001000u)
#define DWT_CTRL_CYCCNTENA (1u << 0)
#define DWT_CYCCNT REG32(0xE0001004u)

/* GPIO ports share one layout on F4 and L4; only the bus address differs. */
#define GPIO_MODER(base) REG32((base) + 0x00u)
#define GPIO_OSPEEDR(base) REG32((base) + 0x08u)
#define GPIO_PUPDR(base) REG32((base) + 0x0Cu)
#define GPIO_BSRR(base) REG32((base) + 0x18u)
#define GPIO_AFR(base, n) REG32((base) + 0x20u + 4u * (n))
#define GPIO_MODE_AF 2u
#define GPIO_SPEED_HIGH 2u
#define GPIO_PULL_UP 1u

#if defined(MCU_IDS_STM32F4)

#define RCC_BASE 0x40023800u
#define RCC_CR REG32(RCC_BASE + 0x00u)
#define RCC_PLLCFGR REG32(RCC_BASE + 0x04u)
#define RCC_CFGR REG32(RCC_BASE + 0x08u)
#define RCC_AHB1ENR REG32(RCC_BASE + 0x30u)
#define RCC_APB1ENR REG32(RCC_BASE + 0x40u)
#define RCC_APB2ENR REG32(RCC_BASE + 0x44u)
#define RCC_GPIOENR RCC_AHB1ENR
#define RCC_PWRENR RCC_APB1ENR
#define RCC_PWREN (1u << 28)

#define RCC_CR_HSION (1u << 0)
#define RCC_CR_HSIRDY (1u << 1)
#define RCC_CR_HSEON (1u << 16)
#define RCC_CR_HSERDY (1u << 17)
#define RCC_CR_HSEBYP (1u << 18)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)

#define RCC_PLLCFGR_M_SHIFT 0
#define RCC_PLLCFGR_N_SHIFT 6
#define RCC_PLLCFGR_P_SHIFT 16
#define RCC_PLLCFGR_SRC_HSI 0u
#define RCC_PLLCFGR_SRC_HSE (1u << 22)
#define RCC_PLLCFGR_MNP_SRC_MASK ((0x3Fu << 0) | (0x1FFu << 6) | (0x3u << 16) | (1u << 22))

#define RCC_CFGR_SW_MASK 0x3u
#define RCC_CFGR_SW_PLL 0x2u
#define RCC_CFGR_SWS_SHIFT 2
#define RCC_CFGR_PPRE1_SHIFT 10
#define RCC_CFGR_PPRE2_SHIFT 13
#define RCC_CFGR_PPRE_MASK 0x7u

#define PWR_BASE 0x40007000u
#define PWR_CR REG32(PWR_BASE + 0x00u)
#define PWR_CSR REG32(PWR_BASE + 0x04u)
#define PWR_CR_ODEN (1u << 16)
#define PWR_CR_ODSWEN (1u << 17)
#define PWR_CSR_ODRDY (1u << 16)
#define PWR_CSR_ODSWRDY (1u << 17)

#define FLASH_ACR REG32(0x40023C00u)
#define FLASH_ACR_LATENCY_MASK 0xFu
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ICEN (1u << 9)
#define FLASH_ACR_DCEN (1u << 10)

#define GPIO_PORT_BASE(port) (0x40020000u + 0x400u * (port))

/* USART layout of the F4 family (status and data share one register pair). */
#define USART_SR(base) REG32((base) + 0x00u)
#define USART_DR(base) REG32((base) + 0x04u)
#define USART_BRR(base) REG32((base) + 0x08u)
#define USART_CR1(base) REG32((base) + 0x0Cu)
#define USART_CR1_UE (1u << 13)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_SR_ORE (1u << 3)
#define USART_SR_RXNE (1u << 5)
#define USART_SR_TC (1u << 6)
#define USART_SR_TXE (1u << 7)

#elif defined(MCU_IDS_STM32L4)

#define RCC_BASE 0x40021000u
#define RCC_CR REG32(RCC_BASE + 0x00u)
#define RCC_CFGR REG32(RCC_BASE + 0x08u)
#define RCC_PLLCFGR REG32(RCC_BASE + 0x0Cu)
#define RCC_AHB2ENR REG32(RCC_BASE + 0x4Cu)
#define RCC_APB1ENR1 REG32(RCC_BASE + 0x58u)
#define RCC_APB1ENR2 REG32(RCC_BASE + 0x5Cu)
#define RCC_APB2ENR REG32(RCC_BASE + 0x60u)
#define RCC_GPIOENR RCC_AHB2ENR
#define RCC_PWRENR RCC_APB1ENR1
#define RCC_PWREN (1u << 28)

#define RCC_CR_HSION (1u << 8)
#define RCC_CR_HSIRDY (1u << 10)
#define RCC_CR_HSEON (1u << 16)
#define RCC_CR_HSERDY (1u << 17)
#define RCC_CR_HSEBYP (1u << 18)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)

#define RCC_PLLCFGR_SRC_HSI 0x2u
#define RCC_PLLCFGR_SRC_HSE 0x3u
#define RCC_PLLCFGR_M_SHIFT 4
#define RCC_PLLCFGR_N_SHIFT 8
#define RCC_PLLCFGR_REN (1u << 24)
#define RCC_PLLCFGR_R_SHIFT 25

#define RCC_CFGR_SW_MASK 0x3u
#define RCC_CFGR_SW_PLL 0x3u
#define RCC_CFGR_SWS_SHIFT 2
#define RCC_CFGR_HPRE_SHIFT 4
#define RCC_CFGR_HPRE_MASK 0xFu
#define RCC_CFGR_HPRE_DIV2 0x8u
#define RCC_CFGR_PPRE1_SHIFT 8
#define RCC_CFGR_PPRE2_SHIFT 11
#define RCC_CFGR_PPRE_MASK 0x7u

#define PWR_BASE 0x40007000u
#define PWR_CR1 REG32(PWR_BASE + 0x00u)
#define PWR_CR2 REG32(PWR_BASE + 0x04u)
#define PWR_SR2 REG32(PWR_BASE + 0x14u)
#define PWR_CR5 REG32(PWR_BASE + 0x80u)
#define PWR_CR2_IOSV (1u << 9)
#define PWR_SR2_VOSF (1u << 10)
#define PWR_CR5_R1MODE (1u << 8)

#define FLASH_ACR REG32(0x40022000u)
#define FLASH_ACR_LATENCY_MASK 0xFu
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ICEN (1u << 9)
#define FLASH_ACR_DCEN (1u << 10)

#define GPIO_PORT_BASE(port) (0x48000000u + 0x400u * (port))

/* USART/LPUART layout of the L4 family (separate status, clear, receive and send registers). */
#define USART_CR1(base) REG32((base) + 0x00u)
#define USART_BRR(base) REG32((base) + 0x0Cu)
#define USART_ISR(base) REG32((base) + 0x1Cu)
#define USART_ICR(base) REG32((base) + 0x20u)
#define USART_RDR(base) REG32((base) + 0x24u)
#define USART_TDR(base) REG32((base) + 0x28u)
#define USART_CR1_UE (1u << 0)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_ISR_ORE (1u << 3)
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_TC (1u << 6)
#define USART_ISR_TXE (1u << 7)
#define USART_ICR_ORECF (1u << 3)

#else
#error "define MCU_IDS_STM32F4 or MCU_IDS_STM32L4 (the build sets it from the board file)"
#endif

#endif /* MCU_IDS_STM32_REGS_H */
