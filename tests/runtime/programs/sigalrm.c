/* SIGALRM every 2 ms (SA_RESTART) while opening a file over and over: must complete. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile long alarms;

static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

int main(int argc, char **argv) {
    int rounds = argc > 2 ? atoi(argv[2]) : 2000, failures = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval every = {{0, 2000}, {0, 2000}};
    setitimer(ITIMER_REAL, &every, NULL);
    for (int i = 0; i < rounds; i++) {
        int fd = open(argv[1], O_RDONLY);
        if (fd < 0)
            failures++;
        else
            close(fd);
    }
    printf("opens %d failures %d alarms %ld\n", rounds, failures, alarms);
    return failures != 0;
}
