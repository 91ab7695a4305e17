#include <stdio.h>

int main() {
    printf("Hello World\n");
    return 0;
}
