/* Start N threads that stay alive; report how many started and why the next one failed. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_barrier_t done;

static void *idle(void *arg) {
    (void)arg;
    pthread_barrier_wait(&done);
    return NULL;
}

int main(int argc, char **argv) {
    int wanted = argc > 1 ? atoi(argv[1]) : 4, started = 0, err = 0;
    pthread_t threads[256];
    pthread_barrier_init(&done, NULL, (unsigned)wanted + 1);
    for (; started < wanted; started++) {
        err = pthread_create(&threads[started], NULL, idle, NULL);
        if (err)
            break;
    }
    printf("started %d of %d threads%s%s\n", started, wanted, err ? ": " : "",
           err ? strerror(err) : "");
    fflush(stdout);
    _exit(err ? 3 : 0); /* the barrier never fills when a thread is missing */
}
