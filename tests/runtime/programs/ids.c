/* Print the identity and umask the program runs with. */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    mode_t mask = umask(0);
    printf("uid=%d gid=%d euid=%d umask=%03o\n", getuid(), getgid(), geteuid(), mask);
    return 0;
}
