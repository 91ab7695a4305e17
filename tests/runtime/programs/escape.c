/* Try one way out of the enclave's view; print what was read or the error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(int fd) {
    if (fd < 0) {
        printf("ERR:%s\n", strerrorname_np(errno));
        return 0;
    }
    char buf[256] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0)
        printf("ERR:%s\n", strerrorname_np(errno));
    else
        printf("READ:%s\n", buf);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argv[1], *a = argv[2], *b = argc > 3 ? argv[3] : NULL;
    if (!strcmp(mode, "open"))
        return report(open(a, O_RDONLY));
    if (!strcmp(mode, "openat2")) {
        struct open_how how = {.flags = O_RDONLY, .resolve = RESOLVE_IN_ROOT};
        return report((int)syscall(SYS_openat2, AT_FDCWD, a, &how, sizeof how));
    }
    if (!strcmp(mode, "dirfd")) {
        int dir = open(a, O_RDONLY | O_DIRECTORY);
        return report(openat(dir, b, O_RDONLY));
    }
    if (!strcmp(mode, "opath-reopen")) {
        int fd = open(a, O_PATH);
        if (fd < 0)
            return report(fd);
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        return report(open(proc, O_RDONLY));
    }
    if (!strcmp(mode, "symlink")) {
        if (symlink(a, b) != 0)
            printf("symlink:%s\n", strerrorname_np(errno));
        return report(open(b, O_RDONLY));
    }
    if (!strcmp(mode, "link")) {
        if (link(a, b) != 0)
            printf("link:%s\n", strerrorname_np(errno));
        return report(open(b, O_RDONLY));
    }
    if (!strcmp(mode, "rename")) {
        if (rename(a, b) != 0)
            printf("rename:%s\n", strerrorname_np(errno));
        else
            printf("rename:OK\n");
        return 0;
    }
    if (!strcmp(mode, "write")) {
        int fd = open(a, O_WRONLY | O_APPEND);
        if (fd < 0)
            return report(fd);
        printf("%s\n", write(fd, "x", 1) == 1 ? "WROTE" : "ERR:write");
        return 0;
    }
    if (!strcmp(mode, "handle")) {
        struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
        h->handle_bytes = MAX_HANDLE_SZ;
        int mount_id;
        if (name_to_handle_at(AT_FDCWD, a, h, &mount_id, 0) != 0)
            printf("name_to_handle_at:%s\n", strerrorname_np(errno));
        return report(open_by_handle_at(AT_FDCWD, h, O_RDONLY));
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
