/* File system operations named on the command line, one result line each:
 *   read P | write P (create, append) | trunc P | unlink P | mkdir P | rename A B |
 *   chmod P MODE (octal) | touch P (times set to now)
 * prints "<op> ok" or "<op> <errno name>". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *name(int err) {
    switch (err) {
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EROFS: return "EROFS";
    case EXDEV: return "EXDEV";
    case EEXIST: return "EEXIST";
    default: return strerror(err);
    }
}

static void report(const char *op, int result) {
    if (result < 0)
        printf("%s %s\n", op, name(errno));
    else
        printf("%s ok\n", op);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *op = argv[i];
        if (i + 1 >= argc)
            return 2;
        const char *path = argv[++i];
        if (!strcmp(op, "read")) {
            int fd = open(path, O_RDONLY);
            char buf[64];
            report(op, fd < 0 ? -1 : (int)read(fd, buf, sizeof buf));
            if (fd >= 0)
                close(fd);
        } else if (!strcmp(op, "size")) { /* the bytes a read of the whole file gets */
            int fd = open(path, O_RDONLY);
            char buf[4096];
            long total = 0;
            ssize_t n = 0;
            while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0)
                total += n;
            if (fd < 0 || n < 0)
                report(op, -1);
            else
                printf("size %ld\n", total);
            if (fd >= 0)
                close(fd);
        } else if (!strcmp(op, "write")) {
            int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            report(op, fd < 0 ? -1 : (int)write(fd, "written\n", 8));
            if (fd >= 0)
                close(fd);
        } else if (!strcmp(op, "trunc")) {
            int fd = open(path, O_WRONLY | O_TRUNC);
            report(op, fd);
            if (fd >= 0)
                close(fd);
        } else if (!strcmp(op, "unlink")) {
            report(op, unlink(path));
        } else if (!strcmp(op, "mkdir")) {
            report(op, mkdir(path, 0755));
        } else if (!strcmp(op, "rename") && i + 1 < argc) {
            report(op, rename(path, argv[++i]));
        } else if (!strcmp(op, "touch")) {
            report(op, utimensat(AT_FDCWD, path, NULL, 0));
        } else if (!strcmp(op, "chmod") && i + 1 < argc) {
            report(op, chmod(path, (mode_t)strtol(argv[++i], NULL, 8)));
        } else {
            return 2;
        }
    }
    fflush(stdout);
    return 0;
}
