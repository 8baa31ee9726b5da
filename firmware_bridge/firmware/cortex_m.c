/*
 * cortex_m.c - start-up and idle shared by the Cortex-M boards (see cortex_m.h), and memcpy/memset, which
 * gcc may emit calls to even under -ffreestanding (there is no libc).
 */
#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "controller.h"
#include "cortex_m.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;

void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);

void *memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    uint8_t *d = dst;
    while (n--) {
        *d++ = (uint8_t)c;
    }
    return dst;
}

void fault_handler(void)
{
    for (;;) {
    }
}

void reset_handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; dst++) {
        *dst = 0;
    }
    controller_main();
}

volatile uint32_t cortex_m_millis;

uint32_t board_millis(void) { return cortex_m_millis; }

void board_sleep(int (*work_pending)(void))
{
    __asm__ volatile("cpsid i" ::: "memory");
    if (!work_pending()) {
        __asm__ volatile("wfi" ::: "memory");
    }
    __asm__ volatile("cpsie i" ::: "memory");
}
