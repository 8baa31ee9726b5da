/*
 * board.h - what the reference controller needs from a board. One C file implements it per board
 * (board_mps2_an385.c for QEMU's Cortex-M3 board); PORTING.md says how to write another.
 *
 * Contract:
 *   - board_init() sets up clocks, the link UART (RX interrupt on), the debug/monitor output,
 *     a 1 kHz millisecond tick and a vsync timer at CONTROLLER_VSYNC_HZ, then enables interrupts.
 *   - The link UART's RX interrupt hands every received byte to controller_rx_byte() (controller.h);
 *     it must drain the receive register completely each time (see PORTING.md for the CMSDK
 *     ordering rule: clear the interrupt BEFORE draining).
 *   - The vsync timer's interrupt calls controller_vsync_isr().
 *   - board_link_write() sends bytes on the link UART and returns once they are queued/sent.
 *   - board_led_zone()/board_led_latch() stream one frame of 16-bit duty values to the LED drivers
 *     (zone order row-major) and latch them at once.
 *   - board_monitor_write() is diagnostic output (a second UART, SWO, RTT); the controller writes one
 *     line per event there, e.g. "A <frame_id> <vsync> <crc32 of the duty values>" per latched frame,
 *     which the host's bench checks against what it sent.
 *   - board_sleep() waits for the next interrupt unless work_pending() says there is work; it must
 *     close the race between the check and the wait (on Cortex-M: CPSID, check, WFI, CPSIE).
 */
#ifndef BOARD_H
#define BOARD_H

#include <stddef.h>
#include <stdint.h>

enum board_reset_cause {
    BOARD_RESET_POWER_ON = 0, /* cold start */
    BOARD_RESET_WARM = 1,     /* reset pin, debugger or SYSRESETREQ; RAM kept */
    BOARD_RESET_WATCHDOG = 2  /* the hardware watchdog fired */
};

void board_init(void);
uint32_t board_millis(void);
enum board_reset_cause board_reset_cause(void);
void board_link_write(const uint8_t *data, size_t len);
void board_led_zone(uint16_t index, uint16_t duty);
void board_led_latch(void);
int board_led_fault(void);
void board_monitor_write(const char *text);
void board_sleep(int (*work_pending)(void));

#endif /* BOARD_H */
