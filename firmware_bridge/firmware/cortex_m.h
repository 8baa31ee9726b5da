/*
 * cortex_m.h - what every Cortex-M board of the reference controller shares (cortex_m.c): the reset handler
 * (.data copy, .bss clear, then controller_main), a fault handler that parks the CPU, the linker script's
 * stack symbol for the vector table, board_millis over a SysTick-driven counter, and board_sleep (CPSID,
 * check, WFI, CPSIE). A board file adds its
 * vector table, peripherals and board.h's other functions.
 */
#ifndef CORTEX_M_H
#define CORTEX_M_H

#include <stdint.h>

extern uint32_t _estack; /* top of the stack, from the linker script */

/* Milliseconds since boot: the board's SysTick handler (1 kHz) increments it; board_millis() returns it. */
extern volatile uint32_t cortex_m_millis;

void reset_handler(void);
void fault_handler(void);

typedef void (*handler_t)(void);

/* Cortex-M vector table: initial stack pointer, 15 system exceptions, 32 external interrupts. */
struct vector_table {
    uint32_t *initial_sp;
    handler_t system[15];
    handler_t irq[32];
};

#endif /* CORTEX_M_H */
