/*
 * emulated.h - stand-ins shared by the boards QEMU emulates (emulated.c): what a real board gets from its
 * reset-cause register and its LED drivers. A port to real hardware implements those board.h functions itself.
 */
#ifndef EMULATED_H
#define EMULATED_H

/* Call first thing in board_init(): reads and re-arms the reset-cause word in .noinit RAM. */
void emulated_boot(void);

#endif /* EMULATED_H */
