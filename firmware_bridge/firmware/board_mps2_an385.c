/*
 * board_mps2_an385.c - board layer for ARM's MPS2 with the AN385 image (Cortex-M3), as QEMU's
 * `-M mps2-an385` emulates it. The only file to replace when porting (PORTING.md).
 *
 *   link UART      CMSDK UART0 (0x40004000), RX interrupt = IRQ 0   -> QEMU -serial #1
 *   monitor        CMSDK UART1 (0x40005000), polled TX              -> QEMU -serial #2
 *   millisecond    SysTick at 1 kHz from the 25 MHz core clock
 *   vsync          CMSDK APB timer 0 (0x40000000), IRQ 8, at CONTROLLER_VSYNC_HZ
 *   LED drivers,   stand-ins shared with the other emulated board (emulated.c)
 *   reset cause
 *
 * Also the vector table; the start-up and idle code every Cortex-M board shares is cortex_m.c.
 */
#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "controller.h"
#include "cortex_m.h"
#include "emulated.h"

#define CORE_HZ 25000000u

typedef struct {
    volatile uint32_t data, state, ctrl, intstatus, bauddiv;
} cmsdk_uart_t;

typedef struct {
    volatile uint32_t ctrl, value, reload, intstatus;
} cmsdk_timer_t;

#define UART0 ((cmsdk_uart_t *)0x40004000u)
#define UART1 ((cmsdk_uart_t *)0x40005000u)
#define TIMER0 ((cmsdk_timer_t *)0x40000000u)
#define UART_STATE_TXFULL 0x1u
#define UART_STATE_RXFULL 0x2u
#define UART_CTRL_TXEN 0x1u
#define UART_CTRL_RXEN 0x2u
#define UART_CTRL_RXIRQ 0x8u
#define UART_INT_RX 0x2u
#define TIMER_CTRL_EN 0x1u
#define TIMER_CTRL_IRQ 0x8u

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define IRQ_UART0_RX 0u
#define IRQ_TIMER0 8u




/* ------------------------------------------------------------------------------ interrupts */

static void uart0_rx_handler(void)
{
    /* Clear first, then drain: a byte that lands after the last read raises a new interrupt.
     * (Clearing after the reads can lose that interrupt and stall the UART for good.) */
    UART0->intstatus = UART_INT_RX;
    while (UART0->state & UART_STATE_RXFULL) {
        controller_rx_byte((uint8_t)UART0->data);
    }
}

static void timer0_handler(void)
{
    TIMER0->intstatus = 1u;
    controller_vsync_isr();
}

static void systick_handler(void) { cortex_m_millis++; }

__attribute__((section(".isr_vector"), used)) static const struct vector_table vectors = {
    &_estack,
    {reset_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, 0, 0, 0, 0,
     fault_handler, fault_handler, 0, fault_handler, systick_handler},
    {uart0_rx_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler,
     fault_handler, timer0_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler,
     fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler,
     fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler,
     fault_handler, fault_handler, fault_handler, fault_handler}};

/* ------------------------------------------------------------------------------ board API */

void board_init(void)
{
    emulated_boot(); /* reset cause from RAM (emulated.c) */

    UART0->bauddiv = CORE_HZ / 2000000u < 16u ? 16u : CORE_HZ / 2000000u;
    UART0->ctrl = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXIRQ;
    UART1->bauddiv = CORE_HZ / 115200u;
    UART1->ctrl = UART_CTRL_TXEN;

    SYST_RVR = CORE_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* core clock, interrupt, enable */

    TIMER0->reload = CORE_HZ / CONTROLLER_VSYNC_HZ - 1u;
    TIMER0->value = TIMER0->reload;
    TIMER0->intstatus = 1u;
    TIMER0->ctrl = TIMER_CTRL_EN | TIMER_CTRL_IRQ;

    NVIC_ISER0 = (1u << IRQ_UART0_RX) | (1u << IRQ_TIMER0);
    __asm__ volatile("cpsie i" ::: "memory");
}

static void uart_write(cmsdk_uart_t *uart, const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        while (uart->state & UART_STATE_TXFULL) {
        }
        uart->data = data[i];
    }
}

void board_link_write(const uint8_t *data, size_t len) { uart_write(UART0, data, len); }

void board_monitor_write(const char *text)
{
    size_t n = 0;
    while (text[n] != '\0') {
        n++;
    }
    uart_write(UART1, (const uint8_t *)text, n);
}
