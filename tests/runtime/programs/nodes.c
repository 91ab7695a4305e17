/* Symbolic links, UNIX sockets and FIFOs in DIR (an encrypted mount), one line each:
 *   nodes DIR */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static char path[4][256];

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *dir = argv[1];
    snprintf(path[0], sizeof path[0], "%s/target", dir);
    snprintf(path[1], sizeof path[1], "%s/link", dir);
    snprintf(path[2], sizeof path[2], "%s/sock", dir);
    snprintf(path[3], sizeof path[3], "%s/fifo", dir);
    int fd = open(path[0], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "through the link", 16) != 16)
        return 3;
    close(fd);
    char target[64] = {0}, buf[64] = {0};
    int linked = symlink("target", path[1]) == 0 && readlink(path[1], target, sizeof target) > 0;
    fd = open(path[1], O_RDONLY);
    printf("symlink %s -> %s, read '%.*s'\n", linked ? "ok" : strerrorname_np(errno), target,
           (int)(fd >= 0 ? read(fd, buf, sizeof buf - 1) : 0), buf);

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, path[2]);
    int server = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(server, 1) != 0) {
        printf("socket %s\n", strerrorname_np(errno));
    } else {
        pid_t child = fork();
        if (child == 0) {
            int s = socket(AF_UNIX, SOCK_STREAM, 0);
            _exit(connect(s, (struct sockaddr *)&addr, sizeof addr) == 0 &&
                  write(s, "ping", 4) == 4 ? 0 : 1);
        }
        int conn = accept(server, NULL, NULL);
        memset(buf, 0, sizeof buf);
        ssize_t n = conn >= 0 ? read(conn, buf, sizeof buf - 1) : -1;
        waitpid(child, NULL, 0);
        printf("socket read %zd '%s'\n", n, buf);
    }

    if (mkfifo(path[3], 0644) != 0) {
        printf("fifo %s\n", strerrorname_np(errno));
        return 0;
    }
    pid_t writer = fork();
    if (writer == 0) {
        int w = open(path[3], O_WRONLY);
        _exit(write(w, "pipe", 4) == 4 ? 0 : 1);
    }
    int r = open(path[3], O_RDONLY);
    memset(buf, 0, sizeof buf);
    ssize_t n = read(r, buf, sizeof buf - 1);
    waitpid(writer, NULL, 0);
    printf("fifo read %zd '%s'\n", n, buf);
    return 0;
}
