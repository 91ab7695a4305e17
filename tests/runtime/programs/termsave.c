/* Wait for SIGTERM, then save a final state to FILE and exit 0 (as redis saves its snapshot):
 *   termsave FILE    prints "ready" once the handler is installed */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *file;

static void on_term(int sig) {
    (void)sig;
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int saved = fd >= 0 && write(fd, "final state\n", 12) == 12 && fsync(fd) == 0;
    _exit(saved && close(fd) == 0 ? 0 : 3);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    file = argv[1];
    signal(SIGTERM, on_term);
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
}
