/* Identities and the answers Gramine gives around them, one line per operation:
 *   chown PATH UID GID    chown, then the owner stat sees
 *   setgroups G1,G2       setgroups, then what getgroups returns
 *   setgid GID | setuid UID   then the real/effective ids
 *   write PATH            open for writing (as whoever the program is now)
 *   unlink PATH | rename OLD NEW | rmdir PATH
 *   affinity              sched_setaffinity to CPU 0, then what sched_getaffinity returns
 *   opath PATH            open(PATH, O_PATH) and fstat it
 *   access PATH MODE      access(PATH, MODE), MODE a combination of r, w, x
 *   execveat PATH ARGS... open PATH read-only and run it by descriptor (AT_EMPTY_PATH) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *result(int ok) { return ok ? "ok" : strerrorname_np(errno); }

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *op = argv[i];
        if (!strcmp(op, "chown") && i + 3 < argc) {
            const char *path = argv[i + 1];
            int ok = chown(path, atoi(argv[i + 2]), atoi(argv[i + 3])) == 0;
            struct stat st;
            if (ok && stat(path, &st) == 0)
                printf("chown ok %d:%d\n", (int)st.st_uid, (int)st.st_gid);
            else
                printf("chown %s\n", result(0));
            i += 3;
        } else if (!strcmp(op, "setgroups") && i + 1 < argc) {
            gid_t groups[16];
            int count = 0;
            for (char *item = strtok(argv[++i], ","); item && count < 16; item = strtok(NULL, ","))
                groups[count++] = atoi(item);
            if (setgroups(count, groups) != 0) {
                printf("setgroups %s\n", result(0));
                continue;
            }
            gid_t seen[16];
            int n = getgroups(16, seen);
            printf("setgroups ok");
            for (int k = 0; k < n; k++)
                printf(" %d", (int)seen[k]);
            printf("\n");
        } else if (!strcmp(op, "setgid") && i + 1 < argc) {
            int ok = setgid(atoi(argv[++i])) == 0;
            printf("setgid %s %d/%d\n", result(ok), (int)getgid(), (int)getegid());
        } else if (!strcmp(op, "setuid") && i + 1 < argc) {
            int ok = setuid(atoi(argv[++i])) == 0;
            printf("setuid %s %d/%d\n", result(ok), (int)getuid(), (int)geteuid());
        } else if (!strcmp(op, "write") && i + 1 < argc) {
            int fd = open(argv[++i], O_WRONLY | O_APPEND);
            printf("write %s\n", result(fd >= 0 && write(fd, "x\n", 2) == 2));
            if (fd >= 0)
                close(fd);
        } else if (!strcmp(op, "unlink") && i + 1 < argc) {
            printf("unlink %s\n", result(unlink(argv[++i]) == 0));
        } else if (!strcmp(op, "rename") && i + 2 < argc) {
            printf("rename %s\n", result(rename(argv[i + 1], argv[i + 2]) == 0));
            i += 2;
        } else if (!strcmp(op, "rmdir") && i + 1 < argc) {
            printf("rmdir %s\n", result(rmdir(argv[++i]) == 0));
        } else if (!strcmp(op, "affinity")) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(0, &set);
            int ok = sched_setaffinity(0, sizeof set, &set) == 0;
            cpu_set_t now;
            CPU_ZERO(&now);
            sched_getaffinity(0, sizeof now, &now);
            printf("affinity %s %d\n", result(ok), CPU_COUNT(&now));
        } else if (!strcmp(op, "access") && i + 2 < argc) {
            const char *path = argv[++i], *letters = argv[++i];
            int mode = (strchr(letters, 'r') ? R_OK : 0) | (strchr(letters, 'w') ? W_OK : 0) |
                       (strchr(letters, 'x') ? X_OK : 0);
            printf("access %s %s %s\n", path, letters, result(access(path, mode) == 0));
        } else if (!strcmp(op, "execveat") && i + 1 < argc) {
            int fd = open(argv[i + 1], O_RDONLY | O_CLOEXEC);
            /* the new image's argv: PATH, then the rest */
            syscall(SYS_execveat, fd, "", &argv[i + 1], environ, AT_EMPTY_PATH);
            printf("execveat %s\n", result(0));
            return 1;
        } else if (!strcmp(op, "opath") && i + 1 < argc) {
            int fd = open(argv[++i], O_PATH);
            struct stat st;
            printf("opath %s\n", result(fd >= 0 && fstat(fd, &st) == 0));
        } else {
            printf("unknown operation %s\n", op);
            return 2;
        }
    }
    return 0;
}
