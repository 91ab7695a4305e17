/* What the program sees of its environment, one line each: hostname, the open-files limit
 * (and whether it may raise its soft limit to the hard one), the first line of a file, and
 * opens with O_CREAT in O_RDONLY mode.
 *   hostname | nofile | head PATH | create-rdonly PATH */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
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
        } else if (!strcmp(op, "create-rdonly") && i + 1 < argc) {
            int fd = open(argv[++i], O_RDONLY | O_CREAT, 0644);
            printf("create-rdonly %s\n", fd >= 0 ? "ok" : strerrorname_np(errno));
        }
    }
    return 0;
}
