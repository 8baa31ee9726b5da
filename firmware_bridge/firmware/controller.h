/*
 * controller.h - the reference display controller (portable part), on the ehlink C library.
 *
 * Behaviour is PROTOCOL.md's and firmware_bridge/simulator.py's: HELLO -> CAPS (or NACK for no
 * common version), CONFIG -> ACK/NACK, ZONES double-buffered and applied latest-wins at vsync
 * through the drive curve, watchdog to the safe level, heartbeats, STATUS with fault bits.
 */
#ifndef CONTROLLER_H
#define CONTROLLER_H

#include <stdint.h>

#ifndef CONTROLLER_ROWS
#define CONTROLLER_ROWS 48u /* largest zone grid the hardware has (CAPS.rows) */
#endif
#ifndef CONTROLLER_COLS
#define CONTROLLER_COLS 48u
#endif
#ifndef CONTROLLER_MAX_BITS
#define CONTROLLER_MAX_BITS 16u
#endif
#ifndef CONTROLLER_VSYNC_HZ
#define CONTROLLER_VSYNC_HZ 120u
#endif
#ifndef CONTROLLER_RX_RING
#define CONTROLLER_RX_RING 2048u /* bytes between the RX interrupt and the main loop; power of two */
#endif

#define CONTROLLER_FW_MAJOR 1u
#define CONTROLLER_FW_MINOR 0u
#define CONTROLLER_FW_PATCH 0u

/* Called by the board from interrupts. */
void controller_rx_byte(uint8_t byte);
void controller_vsync_isr(void);

/* The firmware's main(): never returns. */
void controller_main(void);

#endif /* CONTROLLER_H */
