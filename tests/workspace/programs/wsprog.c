/* The workspace tests' program: one binary, behaviour chosen by argv[1]. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "hello";
    if (!strcmp(mode, "hello")) {
        printf("Hello World\n");
        return 0;
    }
    if (!strcmp(mode, "argv")) { /* argv[0] and the environment, one per line */
        for (int i = 0; i < argc; i++)
            printf("argv[%d]=%s\n", i, argv[i]);
        for (char **e = environ; *e; e++)
            printf("env %s\n", *e);
        char cwd[256];
        printf("cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
        return 0;
    }
    if (!strcmp(mode, "exit") && argc > 2) { /* print a tag, exit with a code */
        printf("tag %s\n", argc > 3 ? argv[3] : "-");
        fflush(stdout);
        return atoi(argv[2]);
    }
    if ((!strcmp(mode, "write") || !strcmp(mode, "append")) && argc > 3) {
        /* write (or append) argv[3] to the file argv[2] */
        FILE *f = fopen(argv[2], !strcmp(mode, "write") ? "w" : "a");
        if (!f) {
            perror(argv[2]);
            return 3;
        }
        fputs(argv[3], f);
        return fclose(f) == 0 ? 0 : 4;
    }
    if (!strcmp(mode, "cat") && argc > 2) { /* print the file argv[2] */
        FILE *f = fopen(argv[2], "r");
        if (!f) {
            perror(argv[2]);
            return 3;
        }
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, stdout);
        return 0;
    }
    if (!strcmp(mode, "stdin")) { /* upper-case stdin to stdout, a note to stderr */
        int c;
        while ((c = getchar()) != EOF)
            putchar(c >= 'a' && c <= 'z' ? c - 32 : c);
        fprintf(stderr, "stdin done\n");
        return 5;
    }
    if (!strcmp(mode, "sleep") && argc > 2) {
        sleep((unsigned)atoi(argv[2]));
        printf("slept\n");
        return 0;
    }
    if (!strcmp(mode, "escape")) { /* calls the enclave's filter refuses */
        int u = unshare(CLONE_NEWUSER | CLONE_NEWNS);
        printf("unshare %s\n", u == 0 ? "ok" : strerror(errno));
        int m = mount("none", "/tmp", "tmpfs", 0, NULL);
        printf("mount %s\n", m == 0 ? "ok" : strerror(errno));
        return 0;
    }
    fprintf(stderr, "wsprog: unknown mode %s\n", mode);
    return 2;
}
