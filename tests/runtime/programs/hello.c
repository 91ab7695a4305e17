/* Print a greeting, the arguments, and exit with the status given as the first argument. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("Hello, world\n");
    for (int i = 1; i < argc; i++)
        printf("arg[%d]=%s\n", i, argv[i]);
    return argc > 1 ? atoi(argv[1]) : 0;
}
