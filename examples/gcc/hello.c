#include <stdio.h>

int main(void) {
    printf("Hello from a program compiled inside the enclave\n");
    return 0;
}
