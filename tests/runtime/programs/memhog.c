/* Allocate and touch memory in 8 MiB steps up to a target; report how far it got. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long target_mb = argc > 1 ? atol(argv[1]) : 512, got = 0;
    while (got < target_mb) {
        char *block = malloc(8 << 20);
        if (!block) {
            printf("allocation failed after %ld MiB\n", got);
            return 1;
        }
        memset(block, 1, 8 << 20);
        got += 8;
    }
    printf("allocated %ld MiB\n", got);
    return 0;
}
