/* One thread flips the exec path between a trusted and an untrusted binary while another
 * thread execs it; counts the untrusted binary's runs. Both are this program: run with
 * --child, it exits 42 if it is the untrusted copy (its /proc/self/exe says "evil"), else 0.
 * The untrusted path may be "copy:SRC:DST" (SRC copied to DST first: a file the enclave made,
 * in /tmp) or "memfd:SRC" (SRC copied into a memfd named "evil", run as /proc/self/fd/N). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
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

static int copy_into(const char *source, int target) {
    int in = open(source, O_RDONLY);
    char buffer[65536];
    ssize_t got;
    if (in < 0 || target < 0)
        return -1;
    while ((got = read(in, buffer, sizeof buffer)) > 0)
        if (write(target, buffer, got) != got)
            return -1;
    close(in);
    return 0;
}

static const char *prepare(const char *spec) {
    static char made[256];
    if (strncmp(spec, "memfd:", 6) == 0) {
        int memfd = memfd_create("evil", 0);
        if (copy_into(spec + 6, memfd) != 0)
            return spec;
        snprintf(made, sizeof made, "/proc/self/fd/%d", memfd);
        return made;
    }
    if (strncmp(spec, "copy:", 5) == 0) {
        char source[256];
        snprintf(source, sizeof source, "%s", spec + 5);
        char *target = strchr(source, ':');
        if (!target)
            return spec;
        *target++ = 0;
        int out = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0755);
        copy_into(source, out);
        close(out);
        snprintf(made, sizeof made, "%s", target);
        return made;
    }
    return spec;
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
    bad = prepare(argv[2]);
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
