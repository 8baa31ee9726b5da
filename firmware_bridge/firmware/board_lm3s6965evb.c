/*
 * board_lm3s6965evb.c - board layer for TI's Stellaris LM3S6965 evaluation board (Cortex-M3), as QEMU's
 * `-M lm3s6965evb` emulates it: the port of the reference controller to a second board, in one file.
 *
 *   link UART      UART0 (PL011, 0x4000C000) with its 16-byte FIFOs, RX interrupt = IRQ 5 -> QEMU -serial #1
 *   monitor        UART1 (PL011, 0x4000D000), polled TX                                   -> QEMU -serial #2
 *   clock          50 MHz from the PLL and the board's 8 MHz crystal (SYSDIV 4), set up as TivaWare's
 *                  SysCtlClockSet does; QEMU derives its clock from the same RCC fields (200 MHz / (SYSDIV + 1))
 *   millisecond    SysTick at 1 kHz from the core clock
 *   vsync          general-purpose timer 0A (0x40030000), periodic, IRQ 19, at CONTROLLER_VSYNC_HZ
 *   LED drivers,   stand-ins shared with MPS2 (emulated.c)
 *   reset cause
 *
 * Why a second board: it shows what a port is (this file, nothing else changes) and runs the same controller
 * on a different UART (PL011 with FIFOs) and a different vsync timer (the general-purpose timer). In QEMU its link
 * is about ten times faster than MPS2's: the PL011 queues bytes in its FIFO without waiting for the CPU.
 */
#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "controller.h"
#include "cortex_m.h"
#include "emulated.h"

#define CORE_HZ 50000000u

#define SYSCTL_RIS (*(volatile uint32_t *)0x400FE050u)
#define SYSCTL_MISC (*(volatile uint32_t *)0x400FE058u)
#define SYSCTL_RCC (*(volatile uint32_t *)0x400FE060u)
#define SYSCTL_RCGC1 (*(volatile uint32_t *)0x400FE104u)
#define RCGC1_UART0 0x00000001u
#define RCGC1_UART1 0x00000002u
#define RCGC1_TIMER0 0x00010000u
#define RCC_MOSCDIS 0x00000001u
#define RCC_OSCSRC_M 0x00000030u
#define RCC_XTAL_M 0x000003C0u
#define RCC_XTAL_8MHZ 0x00000380u
#define RCC_BYPASS 0x00000800u
#define RCC_PWRDN 0x00002000u
#define RCC_USESYSDIV 0x00400000u
#define RCC_SYSDIV_M 0x07800000u
#define RCC_SYSDIV_4 0x01800000u /* SYSDIV = 3: 200 MHz / 4 */
#define SYSCTL_PLLLRIS 0x40u

typedef struct {
    volatile uint32_t dr, rsr, reserved0[4], fr, reserved1, ilpr, ibrd, fbrd, lcrh, ctl, ifls, im, ris, mis, icr;
} pl011_t;

#define UART0 ((pl011_t *)0x4000C000u)
#define UART1 ((pl011_t *)0x4000D000u)
#define UART_FR_RXFE 0x10u
#define UART_FR_TXFF 0x20u
#define UART_LCRH_FEN 0x10u
#define UART_LCRH_WLEN8 0x60u
#define UART_CTL_EN 0x301u /* UARTEN | TXE | RXE */
#define UART_INT_RX 0x10u
#define UART_INT_RT 0x40u

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define IRQ_UART0 5u
#define IRQ_TIMER0A 19u

typedef struct {
    volatile uint32_t cfg, tamr, tbmr, ctl, reserved0[2], imr, ris, mis, icr, tailr;
} gptm_t;

#define TIMER0 ((gptm_t *)0x40030000u)
#define GPTM_CFG_32BIT 0x0u
#define GPTM_TAMR_PERIODIC 0x2u
#define GPTM_CTL_TAEN 0x1u
#define GPTM_TATO 0x1u /* time-out interrupt */




/* ------------------------------------------------------------------------------ interrupts */

static void uart0_handler(void)
{
    /* Clear, then drain the FIFO: a byte that lands after the last read raises a new interrupt. */
    UART0->icr = UART_INT_RX | UART_INT_RT;
    while (!(UART0->fr & UART_FR_RXFE)) {
        controller_rx_byte((uint8_t)UART0->dr);
    }
}

static void systick_handler(void) { cortex_m_millis++; }

static void timer0a_handler(void)
{
    TIMER0->icr = GPTM_TATO;
    controller_vsync_isr();
}

__attribute__((section(".isr_vector"), used)) static const struct vector_table vectors = {
    &_estack,
    {reset_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, 0, 0, 0, 0,
     fault_handler, fault_handler, 0, fault_handler, systick_handler},
    {fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, uart0_handler, fault_handler, fault_handler,
     fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler,
     fault_handler, fault_handler, fault_handler, timer0a_handler, fault_handler, fault_handler, fault_handler, fault_handler,
     fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler}};

/* ------------------------------------------------------------------------------ board API */

/* PLL from the main oscillator (8 MHz crystal), system clock 200 MHz / 4 = 50 MHz. */
static void clock_init(void)
{
    uint32_t rcc = SYSCTL_RCC, spin;
    rcc = (rcc | RCC_BYPASS) & ~RCC_USESYSDIV; /* run from the oscillator while the PLL changes */
    SYSCTL_RCC = rcc;
    rcc &= ~(RCC_MOSCDIS | RCC_OSCSRC_M | RCC_XTAL_M | RCC_PWRDN | RCC_SYSDIV_M);
    rcc |= RCC_XTAL_8MHZ | RCC_SYSDIV_4 | RCC_USESYSDIV;
    SYSCTL_MISC = SYSCTL_PLLLRIS;
    SYSCTL_RCC = rcc;
    for (spin = 0; spin < 100000u && !(SYSCTL_RIS & SYSCTL_PLLLRIS); spin++) {
    }
    SYSCTL_RCC = rcc & ~RCC_BYPASS;
}

void board_init(void)
{
    emulated_boot(); /* reset cause from RAM (emulated.c) */

    clock_init();
    SYSCTL_RCGC1 |= RCGC1_UART0 | RCGC1_UART1 | RCGC1_TIMER0; /* clock the peripherals (gated after reset) */
    (void)SYSCTL_RCGC1;                                       /* a few cycles before they are touched */
    /* 115200 baud from 50 MHz: 27.127 = 27 + 8/64 (QEMU does not emulate the baud rate; a board does). */
    UART0->ctl = 0;
    UART0->ibrd = 27u;
    UART0->fbrd = 8u;
    UART0->lcrh = UART_LCRH_WLEN8 | UART_LCRH_FEN;
    UART0->im = UART_INT_RX | UART_INT_RT;
    UART0->ctl = UART_CTL_EN;
    UART1->ctl = 0;
    UART1->ibrd = 27u;
    UART1->fbrd = 8u;
    UART1->lcrh = UART_LCRH_WLEN8 | UART_LCRH_FEN;
    UART1->ctl = UART_CTL_EN;

    SYST_RVR = CORE_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* core clock, interrupt, enable */

    TIMER0->ctl = 0;
    TIMER0->cfg = GPTM_CFG_32BIT;
    TIMER0->tamr = GPTM_TAMR_PERIODIC;
    TIMER0->tailr = CORE_HZ / CONTROLLER_VSYNC_HZ - 1u;
    TIMER0->icr = GPTM_TATO;
    TIMER0->imr = GPTM_TATO;
    TIMER0->ctl = GPTM_CTL_TAEN;

    NVIC_ISER0 = (1u << IRQ_UART0) | (1u << IRQ_TIMER0A);
    __asm__ volatile("cpsie i" ::: "memory");
}

static void uart_write(pl011_t *uart, const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        while (uart->fr & UART_FR_TXFF) {
        }
        uart->dr = data[i];
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
