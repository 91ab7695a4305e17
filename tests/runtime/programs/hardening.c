/* Probes for the enclave's hardening: a FIFO between two processes, terminal input
 * injection, the hostname, an open by a non-dumpable process. Prints one line per probe. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *err(long ret) { return ret < 0 ? strerrorname_np(errno) : "OK"; }

/* A child writes into the FIFO, the parent reads; `first` says whose open comes first (the
 * other waits 200 ms), so that one waits for its partner inside open(). */
static int fifo(const char *path, const char *first) {
    int writer_first = !strcmp(first, "writer");
    if (mkfifo(path, 0600) != 0) {
        printf("mkfifo: %s\n", err(-1));
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        if (!writer_first)
            usleep(200000);
        int w = open(path, O_WRONLY);
        _exit(w < 0 || write(w, "hi\n", 3) != 3);
    }
    if (writer_first)
        usleep(200000);
    int r = open(path, O_RDONLY);
    char buf[8] = {0};
    if (r < 0 || read(r, buf, sizeof buf - 1) < 0) {
        printf("fifo: %s\n", err(-1));
        return 1;
    }
    int flags = fcntl(r, F_GETFL);
    int status;
    waitpid(child, &status, 0);
    printf("read: %s", buf);
    printf("nonblocking: %s, writer status %d\n", flags & O_NONBLOCK ? "yes" : "no", status);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    if (!strcmp(argv[1], "fifo") && argc > 3)
        return fifo(argv[2], argv[3]);
    if (!strcmp(argv[1], "tiocsti")) {
        char c = '#';
        printf("TIOCSTI: %s\n", err(ioctl(0, TIOCSTI, &c)));
        char paste = 3; /* TIOCL_PASTESEL */
        printf("TIOCLINUX: %s\n", err(ioctl(0, TIOCLINUX, &paste)));
        printf("TCGETS: %s\n", err(ioctl(0, TCGETS, (void *)0)));
        return 0;
    }
    if (!strcmp(argv[1], "sethostname") && argc > 2) {
        printf("sethostname: %s\n", err(sethostname(argv[2], strlen(argv[2]))));
        char name[256] = {0};
        gethostname(name, sizeof name - 1);
        printf("hostname: %s\n", name);
        return 0;
    }
    if (!strcmp(argv[1], "nondumpable") && argc > 2) {
        /* /proc/<pid>/mem of this process now needs CAP_SYS_PTRACE in its user namespace */
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        printf("open: %s\n", err(open(argv[2], O_RDONLY)));
        return 0;
    }
    fprintf(stderr, "unknown probe %s\n", argv[1]);
    return 2;
}
