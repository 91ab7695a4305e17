/* File operations on an encrypted mount, for tests/runtime/test_encrypted*.py.
 *
 *   encfs posix DIR          POSIX semantics, one "ok NAME" line per check (exit 1 on failure)
 *   encfs append FILE N TAG  N 16-byte records "T <i>\n" (T: TAG's first letter) with O_APPEND
 *   encfs concurrent FILE N  two processes append N records each while a third reads
 *   encfs stat PATH          the size stat() reports
 *   encfs cat PATH           the content
 *   encfs write PATH TEXT    create/truncate and write
 *   encfs open-files DIR     unlink and rename of open files, utimensat with nanoseconds,
 *                            flock across processes, truncate by path ("ok NAME" lines)
 *   encfs loop DIR           endless: append to DIR/log, rewrite DIR/state; every 4 rounds
 *                            fsync both and print "synced N" (N records are durable)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define RECORD 16

static char path_buf[4096];

static const char *at(const char *dir, const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", dir, name);
    return path_buf;
}

static void fail(const char *check, const char *detail) {
    printf("FAIL %s: %s (errno %s)\n", check, detail, strerrorname_np(errno) ?: "0");
    exit(1);
}

#define CHECK(name, cond) do { if (!(cond)) fail(name, #cond); } while (0)

static void ok(const char *name) { printf("ok %s\n", name); fflush(stdout); }

static size_t read_all(int fd, char *buf, size_t max) {
    size_t got = 0;
    ssize_t n;
    while (got < max && (n = read(fd, buf + got, max - got)) > 0) got += n;
    return got;
}

static int posix(const char *dir) {
    char buf[8192];
    struct stat st;
    char f[4096];
    snprintf(f, sizeof f, "%s/f", dir);

    int fd = open(f, O_CREAT | O_EXCL | O_RDWR, 0644);
    CHECK("create", fd >= 0);
    CHECK("write", write(fd, "hello world", 11) == 11);
    CHECK("lseek", lseek(fd, 0, SEEK_SET) == 0);
    CHECK("read", read(fd, buf, sizeof buf) == 11 && memcmp(buf, "hello world", 11) == 0);
    ok("create-write-read");

    errno = 0;
    CHECK("excl", open(f, O_CREAT | O_EXCL | O_RDWR, 0644) == -1 && errno == EEXIST);
    ok("o_excl");

    CHECK("pwrite", pwrite(fd, "X", 1, 100000) == 1);
    CHECK("fstat", fstat(fd, &st) == 0 && st.st_size == 100001);
    CHECK("pread", pread(fd, buf, 4, 99998) == 3 && memcmp(buf, "\0\0X", 3) == 0);
    CHECK("stat", stat(f, &st) == 0 && st.st_size == 100001);
    ok("pwrite-pread-hole");

    CHECK("ftruncate", ftruncate(fd, 5) == 0);
    CHECK("fstat", fstat(fd, &st) == 0 && st.st_size == 5);
    CHECK("read", pread(fd, buf, sizeof buf, 0) == 5 && memcmp(buf, "hello", 5) == 0);
    ok("ftruncate");

    CHECK("fsync", fsync(fd) == 0);
    CHECK("fdatasync", fdatasync(fd) == 0);
    ok("fsync");

    int other = open(f, O_RDONLY);
    CHECK("second fd", other >= 0);
    CHECK("write via fd1", pwrite(fd, "HE", 2, 0) == 2);
    CHECK("read via fd2", pread(other, buf, 5, 0) == 5 && memcmp(buf, "HEllo", 5) == 0);
    close(other);
    ok("two-fds");
    close(fd);

    fd = open(f, O_WRONLY | O_TRUNC);
    CHECK("o_trunc", fd >= 0 && fstat(fd, &st) == 0 && st.st_size == 0);
    close(fd);
    ok("o_trunc");

    fd = open(f, O_WRONLY | O_APPEND);
    CHECK("append", write(fd, "a", 1) == 1);
    CHECK("append seek", lseek(fd, 0, SEEK_SET) == 0 && write(fd, "b", 1) == 1);
    close(fd);
    fd = open(f, O_RDONLY);
    CHECK("append content", read_all(fd, buf, sizeof buf) == 2 && memcmp(buf, "ab", 2) == 0);
    close(fd);
    ok("o_append");

    CHECK("mkdir", mkdir(at(dir, "sub"), 0755) == 0);
    fd = open(at(dir, "sub/g"), O_CREAT | O_WRONLY, 0600);
    CHECK("create in sub", fd >= 0 && write(fd, "gg", 2) == 2);
    close(fd);
    int seen = 0;
    DIR *d = opendir(dir);
    CHECK("opendir", d != NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, "f") || !strcmp(e->d_name, "sub")) seen++;
        else if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            fail("readdir", e->d_name);
    }
    closedir(d);
    CHECK("readdir", seen == 2);
    ok("mkdir-readdir");

    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/sub/g", dir);
    snprintf(to, sizeof to, "%s/h", dir);
    CHECK("rename", rename(from, to) == 0);
    fd = open(to, O_RDONLY);
    CHECK("renamed content", fd >= 0 && read_all(fd, buf, sizeof buf) == 2);
    close(fd);
    errno = 0;
    CHECK("rmdir non-empty", rmdir(at(dir, "f")) == -1);
    CHECK("rmdir", rmdir(at(dir, "sub")) == 0);
    CHECK("unlink", unlink(to) == 0);
    errno = 0;
    CHECK("unlinked", open(to, O_RDONLY) == -1 && errno == ENOENT);
    ok("rename-unlink-rmdir");

    snprintf(from, sizeof from, "%s/r1", dir);
    snprintf(to, sizeof to, "%s/r2", dir);
    fd = open(from, O_CREAT | O_WRONLY, 0600);
    CHECK("r1", fd >= 0 && write(fd, "one", 3) == 3);
    close(fd);
    fd = open(to, O_CREAT | O_WRONLY, 0600);
    CHECK("r2", fd >= 0 && write(fd, "two!", 4) == 4);
    int held = open(to, O_RDONLY);  /* the old r2 stays readable through an open fd */
    close(fd);
    CHECK("rename over", rename(from, to) == 0);
    fd = open(to, O_RDONLY);
    CHECK("new r2", fd >= 0 && read_all(fd, buf, sizeof buf) == 3 && !memcmp(buf, "one", 3));
    close(fd);
    CHECK("old r2", read_all(held, buf, sizeof buf) == 4 && !memcmp(buf, "two!", 4));
    close(held);
    errno = 0;
    CHECK("r1 gone", access(from, F_OK) == -1 && errno == ENOENT);
    ok("rename-over-existing");

    fd = open(at(dir, "m"), O_CREAT | O_RDWR, 0600);
    CHECK("mmap file", fd >= 0 && ftruncate(fd, 8192) == 0);
    char *map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK("mmap", map != MAP_FAILED);
    memcpy(map + 4096, "mapped", 6);
    other = open(at(dir, "m"), O_RDONLY);
    CHECK("mmap read", other >= 0 && pread(other, buf, 6, 4096) == 6 && !memcmp(buf, "mapped", 6));
    CHECK("msync", msync(map, 8192, MS_SYNC) == 0);
    munmap(map, 8192);
    close(other);
    close(fd);
    ok("mmap-shared");

    size_t big = 3 << 20;
    char *data = malloc(big), *back = malloc(big);
    for (size_t i = 0; i < big; i++) data[i] = (char)(i * 7 + i / 4096);
    fd = open(at(dir, "big"), O_CREAT | O_RDWR | O_TRUNC, 0600);
    CHECK("big write", fd >= 0 && write(fd, data, big) == (ssize_t)big);
    CHECK("big read", pread(fd, back, big, 0) == (ssize_t)big && !memcmp(data, back, big));
    close(fd);
    ok("large-file");
    return 0;
}

static int open_files(const char *dir) {
    char buf[64];
    struct stat st;
    int fd = open(at(dir, "u"), O_CREAT | O_RDWR, 0644);
    CHECK("unlink-open create", fd >= 0 && write(fd, "abc", 3) == 3);
    CHECK("unlink-open unlink", unlink(at(dir, "u")) == 0 && access(at(dir, "u"), F_OK) != 0);
    CHECK("unlink-open write", pwrite(fd, "def", 3, 3) == 3);
    CHECK("unlink-open read", pread(fd, buf, 6, 0) == 6 && !memcmp(buf, "abcdef", 6));
    CHECK("unlink-open nlink", fstat(fd, &st) == 0 && st.st_nlink == 0);
    close(fd);
    ok("unlink-open");

    fd = open(at(dir, "o1"), O_CREAT | O_RDWR, 0644);
    CHECK("rename-open create", fd >= 0 && write(fd, "x", 1) == 1);
    char o2[4096];
    snprintf(o2, sizeof o2, "%s/o2", dir);
    CHECK("rename-open rename", rename(at(dir, "o1"), o2) == 0);
    CHECK("rename-open write", write(fd, "y", 1) == 1);
    close(fd);
    fd = open(o2, O_RDONLY);
    CHECK("rename-open read", fd >= 0 && read_all(fd, buf, sizeof buf) == 2 && !memcmp(buf, "xy", 2));
    close(fd);
    ok("rename-open");

    struct timespec times[2] = {{1234567890, 123456789}, {1500000000, 987654321}};
    CHECK("utime-ns set", utimensat(AT_FDCWD, o2, times, 0) == 0);
    CHECK("utime-ns stat", stat(o2, &st) == 0 && st.st_atim.tv_sec == 1234567890 &&
          st.st_atim.tv_nsec == 123456789 && st.st_mtim.tv_sec == 1500000000 &&
          st.st_mtim.tv_nsec == 987654321);
    ok("utime-ns");

    fd = open(at(dir, "lock"), O_CREAT | O_RDWR, 0644);
    CHECK("flock own", fd >= 0 && flock(fd, LOCK_EX) == 0);
    pid_t child = fork();
    if (child == 0) {
        int other = open(at(dir, "lock"), O_RDWR);
        _exit(other >= 0 && flock(other, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK ? 0 : 1);
    }
    int status = -1;
    waitpid(child, &status, 0);
    CHECK("flock held off the other process", WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fd);
    ok("flock");

    fd = open(at(dir, "t"), O_CREAT | O_RDWR, 0644);
    CHECK("truncate write", fd >= 0 && write(fd, "0123456789", 10) == 10);
    close(fd);
    CHECK("truncate", truncate(at(dir, "t"), 5) == 0 && stat(at(dir, "t"), &st) == 0 &&
          st.st_size == 5);
    fd = open(at(dir, "t"), O_RDONLY);
    CHECK("truncate read", fd >= 0 && read_all(fd, buf, sizeof buf) == 5 && !memcmp(buf, "01234", 5));
    close(fd);
    ok("truncate");
    return 0;
}

static void append(const char *file, int n, const char *tag) {
    int fd = open(file, O_CREAT | O_WRONLY | O_APPEND, 0600);
    if (fd < 0) fail("append open", file);
    char rec[64];
    for (int i = 0; i < n; i++) {
        snprintf(rec, sizeof rec, "%c %13d\n", tag[0], i);  /* RECORD bytes */
        if (write(fd, rec, RECORD) != RECORD) fail("append write", file);
    }
    close(fd);
}

static int concurrent(const char *file, int n) {
    pid_t writer = fork();
    if (writer == 0) {
        append(file, n, "B");
        _exit(0);
    }
    pid_t reader = fork();
    if (reader == 0) {  /* sizes only grow, by whole records */
        off_t last = 0;
        for (int i = 0; i < 200; i++) {
            struct stat st;
            if (stat(file, &st) == 0) {
                if (st.st_size < last) fail("reader", "size shrank");
                last = st.st_size;
            }
        }
        _exit(0);
    }
    append(file, n, "A");
    int status;
    waitpid(writer, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) fail("writer", "child failed");
    waitpid(reader, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) fail("reader", "child failed");
    int fd = open(file, O_RDONLY);
    size_t size = (size_t)2 * n * RECORD;
    char *all = malloc(size + 1);
    size_t got = read_all(fd, all, size + 1);
    if (got != size) fail("concurrent", "wrong total size");
    int next[2] = {0, 0};
    for (size_t off = 0; off < size; off += RECORD) {
        int who = all[off] == 'A' ? 0 : all[off] == 'B' ? 1 : -1;
        if (who < 0 || atoi(all + off + 2) != next[who]++) fail("concurrent", "torn or lost record");
    }
    printf("ok concurrent %d %d\n", next[0], next[1]);
    return 0;
}

static void __attribute__((noreturn)) loop(const char *dir) {
    char log_path[4096], state_path[4096];
    snprintf(log_path, sizeof log_path, "%s/log", dir);
    snprintf(state_path, sizeof state_path, "%s/state", dir);
    int log = open(log_path, O_CREAT | O_WRONLY | O_APPEND, 0600);
    int state = open(state_path, O_CREAT | O_RDWR, 0600);
    if (log < 0 || state < 0) fail("loop open", dir);
    struct stat st;
    fstat(log, &st);
    int i = (int)(st.st_size / RECORD);
    char rec[64], page[4096];
    for (;; i++) {
        snprintf(rec, sizeof rec, "rec %011d\n", i);
        if (write(log, rec, RECORD) != RECORD) fail("loop", "append");
        for (int k = 0; k < 4096; k += RECORD) memcpy(page + k, rec, RECORD);
        /* The state file: 2 pages of identical records, rewritten whole each round. */
        if (pwrite(state, page, 4096, 0) != 4096 || pwrite(state, page, 4096, 4096) != 4096)
            fail("loop", "state");
        if (i % 4 == 3) {
            if (fsync(log) || fdatasync(state)) fail("loop", "fsync");
            printf("synced %d\n", i + 1);
            fflush(stdout);
        }
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "posix")) return posix(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "open-files")) return open_files(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "append")) { append(argv[2], atoi(argv[3]), argv[4]); return 0; }
    if (argc == 4 && !strcmp(argv[1], "concurrent")) return concurrent(argv[2], atoi(argv[3]));
    if (argc == 3 && !strcmp(argv[1], "loop")) loop(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "stat")) {
        struct stat st;
        if (stat(argv[2], &st)) { printf("ERR:%s\n", strerrorname_np(errno)); return 1; }
        printf("%lld\n", (long long)st.st_size);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "cat")) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) { printf("ERR:%s\n", strerrorname_np(errno)); return 1; }
        char buf[65536];
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "write")) {
        int fd = open(argv[2], O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0) { printf("ERR:%s\n", strerrorname_np(errno)); return 1; }
        if (write(fd, argv[3], strlen(argv[3])) < 0) { printf("ERR:%s\n", strerrorname_np(errno)); return 1; }
        return close(fd) ? 1 : 0;
    }
    fprintf(stderr, "usage: see the comment at the top of encfs.c\n");
    return 2;
}
