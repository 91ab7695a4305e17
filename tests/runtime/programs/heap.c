/* Grow the heap with sbrk in 64 KiB steps up to 64 MiB; print how far it got (the break may
 * not move beyond sys.brk.max_size), then whether malloc still serves 4 MiB (from mmap). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    long grown = 0;
    while (grown < (64L << 20)) {
        if (sbrk(64 << 10) == (void *)-1) {
            printf("sbrk %s after %ld KiB\n", strerrorname_np(errno), grown >> 10);
            break;
        }
        grown += 64 << 10;
    }
    if (grown >= (64L << 20))
        printf("sbrk grew %ld KiB\n", grown >> 10);
    char *block = malloc(4 << 20);
    if (block)
        memset(block, 1, 4 << 20);
    printf("malloc %s\n", block ? "ok" : "failed");
    return 0;
}
