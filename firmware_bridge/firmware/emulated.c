/*
 * emulated.c - board.h stand-ins shared by the emulated boards (MPS2 AN385, LM3S6965 in QEMU).
 *
 *   reset cause    neither board model has a reset-cause register, but QEMU (like SRAM) keeps RAM across
 *                  system_reset: a magic word in .noinit RAM that is there at boot means a warm reset. No
 *                  hardware watchdog is used, so BOARD_RESET_WATCHDOG never occurs.
 *   LED drivers    none: duty values go to a driver shift-register stand-in and a latch counter; the
 *                  controller reports each latched frame on the monitor, which is what the host checks.
 */
#include <stdint.h>

#include "board.h"
#include "emulated.h"

#define RESET_MAGIC 0x45484C4Bu /* "EHLK" */

static enum board_reset_cause reset_cause;
static volatile uint16_t led_shift_register; /* stand-in for the LED drivers' SPI data register */
static volatile uint32_t led_latch_count;    /* stand-in for the drivers' latch strobe */
__attribute__((section(".noinit"))) static volatile uint32_t reset_magic;

void emulated_boot(void)
{
    reset_cause = reset_magic == RESET_MAGIC ? BOARD_RESET_WARM : BOARD_RESET_POWER_ON;
    reset_magic = RESET_MAGIC;
}

enum board_reset_cause board_reset_cause(void) { return reset_cause; }

void board_led_zone(uint16_t index, uint16_t duty)
{
    (void)index;
    led_shift_register = duty;
}

void board_led_latch(void) { led_latch_count++; }

int board_led_fault(void) { return 0; }
