/* Start and join N short-lived threads one after another, as a thread-per-connection server
 * does; at most two threads are ever alive. Reports how many started. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *work(void *arg) {
    return arg;
}

int main(int argc, char **argv) {
    int wanted = argc > 1 ? atoi(argv[1]) : 100, started = 0, err = 0;
    for (; started < wanted; started++) {
        pthread_t thread;
        err = pthread_create(&thread, NULL, work, NULL);
        if (err)
            break;
        pthread_join(thread, NULL);
    }
    printf("started %d of %d threads%s%s\n", started, wanted, err ? ": " : "",
           err ? strerror(err) : "");
    return err ? 3 : 0;
}
