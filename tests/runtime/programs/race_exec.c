/* One thread flips the exec path between a trusted and an untrusted binary while another
 * thread execs it; counts the untrusted binary's runs. Both are this program: run with
 * --child, it exits 42 if it is the untrusted copy (its /proc/self/exe says "evil"), else 0. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char path[256];
static const char *good, *bad;

static void *flipper(void *arg) {
    (void)arg;
    for (;;) {
        strcpy(path, bad);
        strcpy(path, good);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--child") == 0) {
        char self[256] = {0};
        readlink("/proc/self/exe", self, sizeof self - 1);
        return strstr(self, "evil") ? 42 : 0;
    }
    if (argc < 4)
        return 2;
    good = argv[1];
    bad = argv[2];
    int tries = atoi(argv[3]), ran = 0, refused = 0, evil = 0;
    for (int i = 0; i < tries; i++) {
        pid_t child = fork();
        if (child == 0) {
            strcpy(path, good);
            pthread_t t;
            pthread_create(&t, NULL, flipper, NULL);
            char *args[] = {path, "--child", NULL};
            execv(path, args);
            _exit(errno == EACCES ? 3 : 4);
        }
        int status;
        waitpid(child, &status, 0);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (code == 0)
            ran++;
        else if (code == 42)
            evil++;
        else
            refused++;
    }
    printf("tries %d ran %d refused %d evil %d\n", tries, ran, refused, evil);
    return 0;
}
