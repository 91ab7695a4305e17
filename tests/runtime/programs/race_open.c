/* One thread flips a path buffer between an allowed and a forbidden file while the main thread
 * opens it; counts opens that returned the forbidden file's content. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[256];
static const char *good, *bad;
static volatile int stop;

static void *flipper(void *arg) {
    (void)arg;
    while (!stop) {
        strcpy(path, bad);
        strcpy(path, good);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5)
        return 2;
    good = argv[1];
    bad = argv[2];
    const char *secret = argv[3];
    int tries = atoi(argv[4]), leaks = 0, opened = 0;
    strcpy(path, good);
    pthread_t t;
    pthread_create(&t, NULL, flipper, NULL);
    for (int i = 0; i < tries; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        opened++;
        char buf[64] = {0};
        if (read(fd, buf, sizeof buf - 1) > 0 && strstr(buf, secret))
            leaks++;
        close(fd);
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("tries %d opened %d leaks %d\n", tries, opened, leaks);
    return 0;
}
