/* Call a system call the enclave must refuse; print its result and errno. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    long nr = strtol(argv[1], NULL, 0);
    errno = 0;
    long ret = syscall(nr, 0, 0, 0, 0, 0, 0);
    printf("syscall %ld = %ld errno %s\n", nr, ret, ret < 0 ? strerrorname_np(errno) : "0");
    return 0;
}
