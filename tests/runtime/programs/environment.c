/* What the program sees of its environment, one line each: hostname, the open-files limit
 * (and whether it may raise its soft limit to the hard one), the first line of a file, and
 * opens with O_CREAT in O_RDONLY mode.
 * and whether flock and fcntl locks held by one process hold off another.
 *   hostname | nofile | head PATH | cat PATH | create-rdonly PATH | locks PATH | environ */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *op = argv[i];
        if (!strcmp(op, "hostname")) {
            char name[256] = {0};
            gethostname(name, sizeof name - 1);
            printf("hostname %s\n", name);
        } else if (!strcmp(op, "nofile")) {
            struct rlimit limit;
            getrlimit(RLIMIT_NOFILE, &limit);
            limit.rlim_cur = limit.rlim_max;
            printf("nofile %lu raise %s\n", (unsigned long)limit.rlim_max,
                   setrlimit(RLIMIT_NOFILE, &limit) == 0 ? "ok" : strerrorname_np(errno));
        } else if (!strcmp(op, "head") && i + 1 < argc) {
            const char *path = argv[++i];
            FILE *file = fopen(path, "r");
            char line[256] = {0};
            if (!file)
                printf("head %s\n", strerrorname_np(errno));
            else if (fgets(line, sizeof line, file))
                printf("head %s", line);
            else
                printf("head (empty)\n");
        } else if (!strcmp(op, "cat") && i + 1 < argc) {
            FILE *file = fopen(argv[++i], "r");
            char line[1024];
            while (file && fgets(line, sizeof line, file))
                fputs(line, stdout);
        } else if (!strcmp(op, "environ")) {
            for (char **entry = environ; *entry; entry++)
                printf("environ %s\n", *entry);
        } else if (!strcmp(op, "locks") && i + 1 < argc) {
            const char *path = argv[++i];
            int fd = open(path, O_RDWR | O_CREAT, 0644);
            struct flock whole = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
            int held = flock(fd, LOCK_EX) == 0 && fcntl(fd, F_SETLK, &whole) == 0;
            pid_t child = fork();
            if (child == 0) {
                int other = open(path, O_RDWR);
                int flock_blocked = flock(other, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
                struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
                int fcntl_blocked = fcntl(other, F_SETLK, &probe) != 0 &&
                                    (errno == EAGAIN || errno == EACCES);
                _exit(flock_blocked && fcntl_blocked ? 0 : 1);
            }
            int status;
            waitpid(child, &status, 0);
            printf("locks %s\n", held && WIFEXITED(status) && WEXITSTATUS(status) == 0
                   ? "held off the other process" : "not held");
        } else if (!strcmp(op, "create-rdonly") && i + 1 < argc) {
            int fd = open(argv[++i], O_RDONLY | O_CREAT, 0644);
            printf("create-rdonly %s\n", fd >= 0 ? "ok" : strerrorname_np(errno));
        }
    }
    return 0;
}
