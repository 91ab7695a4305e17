/* Escape attempts: `attempts NAME HOST_PID ABSTRACT_NAME` tries one way out of the enclave and
 * prints "HELD NAME: what the kernel or pylos answered" (exit 0) or "ESCAPED NAME: how"
 * (exit 1), then reads a trusted file to show the supervisor still serves ("SERVED").
 *
 * Paths come from the manifest's environment, so the same attempts run in namespace mode (a
 * view: the host paths do not exist) and identity mode (enclave paths are host paths):
 *   ESC_SECRET   a host file outside the view, content "TOPSECRET..."
 *   ESC_HOSTDIR  the host directory holding it and `sentinel/victim.txt` ("SENTINEL...")
 *   ESC_DATA     an allowed (read-write) directory;  ESC_TRUSTED  a trusted file
 *   ESC_PLAIN    a file in the view that is neither trusted nor allowed
 *   ESC_APP      this program (trusted);  ESC_SUID  a set-uid-root binary of the host
 *   ESC_TMP      an enclave-private tmpfs (namespace mode: /tmp; identity mode: /dev/shm)
 * The test passes host descriptors 9 (the host directory), 10 (O_PATH of the secret) and 11
 * (a socket whose peer the test reads) without O_CLOEXEC, as a careless caller would.
 *
 * A read counts as an escape when it returns the secret's or the sentinel's marker; what the
 * host sees (files, modes, set-id bits, sockets, processes) is checked by the test. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <termios.h>
#include <unistd.h>

static const char *SECRET, *HOSTDIR, *DATA, *TRUSTED, *PLAIN, *APP, *SUID, *TMP;
static pid_t host_pid;
static const char *abstract_name;
static int escapes;
static char notes[2048];

static void note(const char *fmt, ...) {
    size_t used = strlen(notes);
    if (used > sizeof notes - 64)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(notes + used, sizeof notes - used, fmt, ap);
    va_end(ap);
    strcat(notes, " ");
}

static void escaped(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("ESCAPED: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    escapes++;
}

/* The call must fail: note its errno, or count an escape. */
static long refused(const char *what, long rc) {
    if (rc < 0)
        note("%s=%s", what, strerrorname_np(errno));
    else
        escaped("%s succeeded (%ld)", what, rc);
    return rc;
}

static int leaks(const char *buf) {
    return strstr(buf, "TOPSECRET") != NULL || strstr(buf, "SENTINEL") != NULL;
}

/* Read what `fd` gives; an escape if it is the secret or the sentinel. Closes fd. */
static void check_fd(const char *what, int fd) {
    char buf[4096] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n < 0)
        n = read(fd, buf, sizeof buf - 1);
    if (n > 0 && leaks(buf))
        escaped("%s read the host secret", what);
    else
        note("%s=read:%zd", what, n);
    close(fd);
}

/* open() must fail, or give nothing of the host. */
static void try_open(const char *what, const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) {
        note("%s=%s", what, strerrorname_np(errno));
        return;
    }
    if ((flags & O_ACCMODE) != O_RDONLY)
        escaped("%s: opened %s for writing", what, path);
    check_fd(what, fd);
}

static char *data_path(const char *name) {
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", DATA, name);
    return p;
}

static void make_file(const char *path, const char *content) {
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (write(fd, content, strlen(content)) < 0)
            note("write-failed");
        close(fd);
    }
}

static void check_no_setid(const char *path) {
    struct stat st;
    if (lstat(path, &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)) && !S_ISDIR(st.st_mode))
        escaped("%s has mode %o", path, st.st_mode & 07777);
    else if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & S_ISUID))
        escaped("%s has mode %o", path, st.st_mode & 07777);
}

/* ---- an untrusted copy of this program, written by the enclave into the allowed directory */

static const char *make_evil_in(const char *dir) {
    static char paths[2][512];
    char *path = paths[dir == DATA];
    snprintf(path, 512, "%s/evil", dir);
    int in = open(APP, O_RDONLY);
    if (in < 0)
        return NULL;
    unlink(path);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, n) != n)
            break;
    if (write(out, "evil", 4) != 4) /* different bytes: no trusted hash matches */
        note("short-write");
    close(in);
    close(out);
    return path;
}

static int evil_memfd(void) {
    int fd = memfd_create("evil", 0);
    int in = open(APP, O_RDONLY);
    char buf[65536];
    ssize_t n;
    while (in >= 0 && (n = read(in, buf, sizeof buf)) > 0)
        if (write(fd, buf, n) != n)
            break;
    if (in >= 0)
        close(in);
    return fd;
}

static const char *make_evil(void) { return make_evil_in(DATA); }

/* Exit status of a child that tried to exec: 42 if the untrusted copy ran (see main). */
static int wait_code(pid_t child) {
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static char flip_path[512];
static const char *flip_good, *flip_bad;
static int flip_fd, flip_good_fd, flip_bad_fd;

static void *path_flipper(void *arg) {
    (void)arg;
    for (;;) {
        strcpy(flip_path, flip_bad);
        strcpy(flip_path, flip_good);
    }
    return NULL;
}

static void *fd_flipper(void *arg) {
    (void)arg;
    for (;;) {
        dup2(flip_bad_fd, flip_fd);
        dup2(flip_good_fd, flip_fd);
    }
    return NULL;
}

static void exec_race(const char *what, const char *good, const char *bad, int tries) {
    int evil = 0, ran = 0;
    flip_good = good;
    flip_bad = bad;
    for (int i = 0; i < tries; i++) {
        pid_t child = fork();
        if (child == 0) {
            strcpy(flip_path, good);
            pthread_t t;
            pthread_create(&t, NULL, path_flipper, NULL);
            char *args[] = {flip_path, "--evil", NULL};
            execv(flip_path, args);
            _exit(3);
        }
        int code = wait_code(child);
        evil += code == 42;
        ran += code == 0;
    }
    if (evil)
        escaped("%s: the untrusted binary ran %d of %d times", what, evil, tries);
    else
        note("%s=evil:0/%d,trusted-ran:%d", what, tries, ran);
}

/* ---- the attempts; each comment names the real-world technique it stands for ---------- */

/* Leaked descriptors from the caller (runc CVE-2024-21626 "Leaky Vessels", CI runner pipes):
 * anything but 0, 1, 2 open at the program's first instruction. */
static void inherited_descriptors_closed(void) {
    for (int fd = 3; fd < 65536; fd++)
        if (fcntl(fd, F_GETFD) != -1) {
            char link[64], target[512] = {0};
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            if (readlink(link, target, sizeof target - 1) < 0)
                strcpy(target, "?");
            escaped("descriptor %d is open at start: %s", fd, target);
        }
    note("fds-3..65535=closed");
}

/* fchdir into a leaked host directory descriptor, then work relative to it (Leaky Vessels). */
static void inherited_dir_fchdir(void) {
    if (refused("fchdir(9)", fchdir(9)) == 0)
        try_open("open(sentinel/victim.txt,O_RDWR)", "sentinel/victim.txt", O_RDWR);
}

/* openat() relative to a leaked directory descriptor, writing into the host. */
static void inherited_dir_openat(void) {
    int fd = openat(9, "sentinel/victim.txt", O_WRONLY | O_TRUNC);
    if (refused("openat(9,victim,O_TRUNC)", fd) >= 0)
        close(fd);
    refused("mkdirat(9,planted)", mkdirat(9, "planted", 0755));
}

/* The leaked descriptor through its magic link: /proc/self/fd/9/... */
static void inherited_dir_magic_link(void) {
    try_open("open(/proc/self/fd/9/secret.txt)", "/proc/self/fd/9/secret.txt", O_RDONLY);
    try_open("open(/proc/self/fd/9/sentinel/victim.txt,O_RDWR)",
             "/proc/self/fd/9/sentinel/victim.txt", O_RDWR);
}

/* A leaked O_PATH handle reopened for reading through /proc/self/fd. */
static void inherited_opath_reopen(void) {
    try_open("open(/proc/self/fd/10)", "/proc/self/fd/10", O_RDONLY);
    refused("fstat(10)", syscall(SYS_fstat, 10, &(struct stat){0}));
}

/* A leaked socket to a host service (a CI runner's control channel). */
static void inherited_socket(void) {
    refused("write(11)", write(11, "LEAK", 4));
    refused("send(11)", send(11, "LEAK", 4, MSG_DONTWAIT));
}

/* chmod, chown and touch the host file the caller passed as standard input, by descriptor
 * and through /proc/self/fd/0: root inside owns every root-owned host inode, and the view's
 * read-only binds do not cover what the caller passed (`pylos run app < /etc/passwd`). */
static void inherited_stdio_metadata(void) {
    refused("fchmod(0,0777)", fchmod(0, 0777));
    refused("fchown(0)", fchown(0, 1234, 1234));
    refused("futimens(0)", futimens(0, NULL));
    refused("chmod(/proc/self/fd/0)", chmod("/proc/self/fd/0", 0));
    refused("utimes(/proc/self/fd/0)", utimes("/proc/self/fd/0", NULL));
    int copy = dup(0);
    refused("fchmod(dup(0),0600)", fchmod(copy, 0600));
    refused("fchmodat2(dup(0),\"\",AT_EMPTY_PATH)", syscall(452, copy, "", 0700, AT_EMPTY_PATH));
    refused("fchownat(dup(0),\"\",AT_EMPTY_PATH)", fchownat(copy, "", 0, 0, AT_EMPTY_PATH));
    close(copy);
}

/* Another process's magic links: /proc/<pid>/root, cwd and fd of every visible process
 * (container escapes through a host process's /proc entry). */
static void proc_pid_magic_links(void) {
    DIR *proc = opendir("/proc");
    struct dirent *e;
    int tried = 0;
    while (proc && (e = readdir(proc))) {
        int pid = atoi(e->d_name);
        if (pid <= 0 || pid == getpid())
            continue;
        char path[1024];
        snprintf(path, sizeof path, "/proc/%d/root%s", pid, SECRET);
        int fd = open(path, O_RDONLY);
        if (fd >= 0)
            check_fd(path, fd);
        snprintf(path, sizeof path, "/proc/%d/cwd/%s/secret.txt", pid, HOSTDIR);
        fd = open(path, O_RDONLY);
        if (fd >= 0)
            check_fd(path, fd);
        snprintf(path, sizeof path, "/proc/%d/fd", pid);
        DIR *fds = opendir(path);
        struct dirent *f;
        while (fds && (f = readdir(fds))) {
            if (f->d_name[0] == '.')
                continue;
            char link[1400];
            snprintf(link, sizeof link, "%s/%s", path, f->d_name);
            fd = open(link, O_RDONLY | O_NONBLOCK);
            if (fd >= 0) {
                struct stat st;
                if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
                    check_fd(link, fd);
                else if (S_ISDIR(st.st_mode) && faccessat(fd, "secret.txt", F_OK, 0) == 0)
                    escaped("%s is the host directory", link);
                else
                    close(fd);
            }
        }
        if (fds)
            closedir(fds);
        tried++;
    }
    if (proc)
        closedir(proc);
    note("processes-tried=%d", tried);
}

/* /proc/self/root/.. climbing out of a chroot-like root. */
static void proc_self_root_dotdot(void) {
    char path[1024];
    snprintf(path, sizeof path, "/proc/self/root/../../../..%s", SECRET);
    try_open("open(/proc/self/root/../..secret)", path, O_RDONLY);
    snprintf(path, sizeof path, "/proc/thread-self/root%s", SECRET);
    try_open("open(/proc/thread-self/root/secret)", path, O_RDONLY);
}

/* Overwrite the runtime's binary through /proc/self/exe (runc CVE-2019-5736). */
static void proc_self_exe_overwrite(void) {
    try_open("open(/proc/self/exe,O_WRONLY)", "/proc/self/exe", O_WRONLY);
    int fd = open("/proc/self/exe", O_PATH);
    if (fd >= 0) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        try_open("reopen(exe,O_RDWR)", link, O_RDWR);
        close(fd);
    }
}

/* Write a trusted file through the memory-mapping magic links /proc/self/map_files. */
static void proc_map_files_write(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[1024];
    int tried = 0;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2 || !strstr(line, "/"))
            continue;
        char path[128];
        snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", lo, hi);
        int fd = open(path, O_RDWR);
        if (fd >= 0) {
            escaped("%s opened for writing", path);
            close(fd);
        }
        tried++;
    }
    if (maps)
        fclose(maps);
    note("mappings-tried=%d", tried);
}

/* Read another process's memory through /proc (the runtime holds the keys). */
static void proc_parent_memory(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", getppid());
    int fd = open(path, O_RDONLY);
    if (refused("open(/proc/ppid/mem)", fd) >= 0)
        close(fd);
    snprintf(path, sizeof path, "/proc/1/mem");
    fd = open(path, O_RDONLY);
    if (refused("open(/proc/1/mem)", fd) >= 0)
        close(fd);
}

/* The host file by its absolute path, the simplest way out. */
static void absolute_path(void) {
    try_open("open(secret)", SECRET, O_RDONLY);
    char path[1024];
    snprintf(path, sizeof path, "%s/sentinel/victim.txt", HOSTDIR);
    try_open("open(victim,O_RDWR)", path, O_RDWR);
}

/* ../ traversal from the allowed directory (path traversal, CWE-22). */
static void dotdot_traversal(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/../../../../../../../..%s", DATA, SECRET);
    try_open("open(data/../..secret)", path, O_RDONLY);
    if (chdir("/") == 0 && chdir("..") == 0)
        try_open("open(cwd-above-root/secret)", SECRET + 1, O_RDONLY);
}

/* A file in the view that the manifest neither trusts nor allows. */
static void unlisted_file(void) { try_open("open(plain)", PLAIN, O_RDONLY); }

/* Write to a trusted file: open for writing, truncate, mmap shared writable. */
static void write_trusted(void) {
    try_open("open(trusted,O_WRONLY)", TRUSTED, O_WRONLY);
    refused("truncate(trusted)", truncate(TRUSTED, 0));
    int fd = open(TRUSTED, O_RDONLY);
    if (fd >= 0) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        refused("mmap(trusted,MAP_SHARED|PROT_WRITE)", p == MAP_FAILED ? -1 : 0);
        close(fd);
    }
}

/* Absolute symlink planted in the allowed directory (symlink following, CWE-61). */
static void symlink_absolute(void) {
    unlink(data_path("abs-link"));
    if (symlink(SECRET, data_path("abs-link")) == 0)
        try_open("open(data/abs-link)", data_path("abs-link"), O_RDONLY);
    else
        note("symlink=%s", strerrorname_np(errno));
}

/* Relative symlink climbing out of the allowed directory. */
static void symlink_relative(void) {
    char target[1024];
    snprintf(target, sizeof target, "../../../../../../../../..%s", SECRET);
    unlink(data_path("rel-link"));
    if (symlink(target, data_path("rel-link")) == 0)
        try_open("open(data/rel-link)", data_path("rel-link"), O_RDONLY);
    else
        note("symlink=%s", strerrorname_np(errno));
}

static volatile int racing;

/* Open `path` 3000 times while `swapper` runs in a thread; an escape if any read leaks. */
static void race_opens(const char *name, void *(*swapper)(void *)) {
    char path[512];
    snprintf(path, sizeof path, "%s", name); /* data_path's buffers are the swapper's now */
    racing = 1;
    pthread_t t;
    pthread_create(&t, NULL, swapper, NULL);
    int opened = 0;
    for (int i = 0; i < 3000 && !escapes; i++) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            opened++;
            char buf[256] = {0};
            if (read(fd, buf, sizeof buf - 1) > 0 && leaks(buf))
                escaped("the racing open read the secret");
            close(fd);
        }
    }
    racing = 0;
    pthread_join(t, NULL);
    note("opens=3000,opened=%d", opened);
}

static void *symlink_swapper(void *arg) {
    (void)arg;
    while (racing) {
        rename(data_path("swap-evil"), data_path("swap"));  /* now a symlink to the secret */
        symlink(SECRET, data_path("swap-evil"));
        rename(data_path("swap-good"), data_path("swap"));  /* now a plain allowed file */
        make_file(data_path("swap-good"), "allowed\n");
    }
    return NULL;
}

/* Swap a checked path for a symlink between check and use (TOCTOU symlink race). */
static void symlink_race(void) {
    make_file(data_path("swap"), "allowed\n");
    make_file(data_path("swap-good"), "allowed\n");
    unlink(data_path("swap-evil"));
    symlink(SECRET, data_path("swap-evil"));
    race_opens(data_path("swap"), symlink_swapper);
}

static void *dir_swapper(void *arg) {
    (void)arg;
    while (racing) {
        rename(data_path("dir"), data_path("dir-real"));
        rename(data_path("dir-evil"), data_path("dir"));   /* a symlink to the host dir */
        rename(data_path("dir"), data_path("dir-evil"));
        rename(data_path("dir-real"), data_path("dir"));
    }
    return NULL;
}

/* Swap a directory in the path for a symlink while the open walks it (rename race). */
static void directory_rename_race(void) {
    mkdir(data_path("dir"), 0755);
    make_file(data_path("dir/secret.txt"), "allowed\n");
    unlink(data_path("dir-evil"));
    symlink(HOSTDIR, data_path("dir-evil"));
    race_opens(data_path("dir/secret.txt"), dir_swapper);
}

static void *dir_mover(void *arg) {
    (void)arg;
    while (racing) {
        rename(data_path("a/b/c"), data_path("c"));
        rename(data_path("c"), data_path("a/b/c"));
    }
    return NULL;
}

/* A directory descriptor moved up while `..` is walked from it (dirfd escape race). */
static void dirfd_dotdot_race(void) {
    mkdir(data_path("a"), 0755);
    mkdir(data_path("a/b"), 0755);
    mkdir(data_path("a/b/c"), 0755);
    int dir = open(data_path("a/b/c"), O_RDONLY | O_DIRECTORY);
    if (dir < 0) {
        note("dirfd=%s", strerrorname_np(errno));
        return;
    }
    char path[1024];
    snprintf(path, sizeof path, "../../../../../../../../../..%s", SECRET);
    racing = 1;
    pthread_t t;
    pthread_create(&t, NULL, dir_mover, NULL);
    for (int i = 0; i < 3000 && !escapes; i++) {
        int fd = openat(dir, path, O_RDONLY);
        if (fd >= 0)
            check_fd("openat(dirfd,../..secret)", fd);
    }
    racing = 0;
    pthread_join(t, NULL);
    close(dir);
    note("openat-tries=3000");
}

/* openat2 with RESOLVE_BENEATH / RESOLVE_IN_ROOT from the allowed directory. */
static void openat2_resolve(void) {
    int dir = open(DATA, O_RDONLY | O_DIRECTORY);
    char path[1024];
    snprintf(path, sizeof path, "../../../../../../..%s", SECRET);
    struct open_how beneath = {.flags = O_RDONLY, .resolve = RESOLVE_BENEATH};
    struct open_how in_root = {.flags = O_RDONLY, .resolve = RESOLVE_IN_ROOT};
    struct open_how plain = {.flags = O_RDONLY};
    long fd = syscall(SYS_openat2, dir, path, &beneath, sizeof beneath);
    if (refused("openat2(BENEATH)", fd) >= 0)
        check_fd("openat2(BENEATH)", (int)fd);
    fd = syscall(SYS_openat2, dir, SECRET, &in_root, sizeof in_root);
    if (fd >= 0)
        check_fd("openat2(IN_ROOT)", (int)fd);
    fd = syscall(SYS_openat2, dir, path, &plain, sizeof plain);
    if (fd >= 0)
        check_fd("openat2(plain)", (int)fd);
    else
        note("openat2(plain)=%s", strerrorname_np(errno));
    close(dir);
}

/* Hard link to a trusted file from a writable place, then write through it. */
static void hard_link_trusted(void) {
    unlink(data_path("trusted-link"));
    if (refused("link(trusted,data/trusted-link)", link(TRUSTED, data_path("trusted-link"))) == 0)
        try_open("open(trusted-link,O_WRONLY)", data_path("trusted-link"), O_WRONLY);
}

/* Hard link a host file into the allowed directory, then read it there. */
static void hard_link_secret_in(void) {
    unlink(data_path("stolen"));
    if (refused("link(secret,data/stolen)", link(SECRET, data_path("stolen"))) == 0)
        try_open("open(data/stolen)", data_path("stolen"), O_RDONLY);
}

/* Hard link a set-uid-root binary into a writable directory (CVE-2009-3238-style races,
 * the reason for fs.protected_hardlinks). */
static void hard_link_setuid_binary(void) {
    unlink(data_path("su"));
    refused("link(/usr/bin/su,data/su)", link(SUID, data_path("su")));
    check_no_setid(data_path("su"));
}

/* Move a trusted file out of place, or replace it with attacker bytes (rename). */
static void rename_trusted(void) {
    refused("rename(trusted,data/moved)", rename(TRUSTED, data_path("moved")));
    make_file(data_path("replacement"), "attacker bytes\n");
    refused("rename(data/replacement,trusted)", rename(data_path("replacement"), TRUSTED));
    refused("unlink(trusted)", unlink(TRUSTED));
}

/* An anonymous O_TMPFILE linked into place over a trusted path. */
static void tmpfile_linkat(void) {
    int fd = open(DATA, O_TMPFILE | O_RDWR, 0644);
    if (fd < 0) {
        note("O_TMPFILE=%s", strerrorname_np(errno));
        return;
    }
    if (write(fd, "attacker\n", 9) != 9)
        note("short-write");
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    refused("linkat(tmpfile,trusted)", linkat(AT_FDCWD, link, AT_FDCWD, TRUSTED, AT_SYMLINK_FOLLOW));
    char outside[1024];
    snprintf(outside, sizeof outside, "%s/planted.txt", HOSTDIR);
    refused("linkat(tmpfile,hostdir)", linkat(AT_FDCWD, link, AT_FDCWD, outside, AT_SYMLINK_FOLLOW));
    close(fd);
}

/* Modify host files outside the view: metadata and removal. */
static void host_metadata(void) {
    char victim[1024];
    snprintf(victim, sizeof victim, "%s/sentinel/victim.txt", HOSTDIR);
    refused("chmod(victim,0777)", chmod(victim, 0777));
    refused("chown(victim)", chown(victim, 1234, 1234));
    refused("utimes(victim)", utimes(victim, NULL));
    refused("unlink(victim)", unlink(victim));
    refused("rename(secret)", rename(SECRET, data_path("secret-moved")));
    refused("truncate(secret)", truncate(SECRET, 0));
}

/* Execute an untrusted binary through O_PATH + execveat (fexecve of a handle). */
static void opath_execveat_untrusted(void) {
    const char *evil = make_evil();
    int fd = open(evil, O_PATH);
    char *args[] = {"evil", "--evil", NULL};
    pid_t child = fork();
    if (child == 0) {
        syscall(SYS_execveat, fd, "", args, environ, AT_EMPTY_PATH);
        _exit(errno == EACCES || errno == EPERM ? 3 : 4);
    }
    int code = wait_code(child);
    if (code == 42)
        escaped("execveat(O_PATH of data/evil) ran it");
    else
        note("execveat(O_PATH)=exit:%d", code);
}

/* Execute a binary the enclave wrote into an allowed (host) directory. */
static void exec_untrusted(void) {
    const char *evil = make_evil();
    pid_t child = fork();
    if (child == 0) {
        char *args[] = {(char *)evil, "--evil", NULL};
        execv(evil, args);
        _exit(errno == EACCES || errno == EPERM ? 3 : 4);
    }
    int code = wait_code(child);
    if (code == 42)
        escaped("execv(data/evil) ran it");
    else
        note("execv(data/evil)=exit:%d", code);
}

/* A script whose #! interpreter is the untrusted binary. */
static void exec_untrusted_interpreter(void) {
    const char *evil = make_evil();
    char script[600];
    snprintf(script, sizeof script, "#!%s --evil\n", evil);
    make_file(data_path("script"), script);
    chmod(data_path("script"), 0755);
    pid_t child = fork();
    if (child == 0) {
        char *args[] = {data_path("script"), NULL};
        execv(args[0], args);
        _exit(3);
    }
    int code = wait_code(child);
    if (code == 42)
        escaped("the script's untrusted interpreter ran");
    else
        note("exec(script)=exit:%d", code);
}

/* mmap a host-written file executable via personality(READ_IMPLIES_EXEC). */
static void personality_read_implies_exec(void) {
    refused("personality(READ_IMPLIES_EXEC)", personality(READ_IMPLIES_EXEC) == -1 ? -1 :
            (personality(0xffffffff) & READ_IMPLIES_EXEC ? 0 : -1));
    personality(PER_LINUX);
}

/* A thread flips the exec path from the trusted binary to the untrusted one after the check. */
static void exec_flip_thread(void) {
    exec_race("flip(app<->data/evil)", APP, make_evil(), 300);
}

/* The exec path flipped to a binary the program wrote into its tmpfs, after the check. */
static void exec_flip_tmpfs(void) {
    const char *evil = make_evil_in(TMP);
    pid_t child = fork();
    if (child == 0) {
        char *args[] = {(char *)evil, "--evil", NULL};
        execv(evil, args);
        _exit(3);
    }
    if (wait_code(child) == 42)
        escaped("execv(tmpfs/evil) ran it");
    exec_race("flip(app<->tmpfs/evil)", APP, evil, 300);
    unlink(evil);
}

/* The exec path flipped to /proc/self/fd of a memfd after the check. */
static void exec_flip_memfd(void) {
    int memfd = evil_memfd();
    static char bad[64];
    snprintf(bad, sizeof bad, "/proc/self/fd/%d", memfd);
    exec_race("flip(app<->memfd)", APP, bad, 300);
}

/* execveat's descriptor swapped (dup2) between the trusted and the untrusted file. */
static void execveat_descriptor_swap(void) {
    const char *evil = make_evil();
    int evil_runs = 0;
    for (int i = 0; i < 300; i++) {
        pid_t child = fork();
        if (child == 0) {
            flip_good_fd = open(APP, O_RDONLY);
            flip_bad_fd = open(evil, O_RDONLY);
            flip_fd = 100;
            dup2(flip_good_fd, flip_fd);
            pthread_t t;
            pthread_create(&t, NULL, fd_flipper, NULL);
            char *args[] = {"app", "--evil", NULL};
            syscall(SYS_execveat, flip_fd, "", args, environ, AT_EMPTY_PATH);
            _exit(3);
        }
        evil_runs += wait_code(child) == 42;
    }
    if (evil_runs)
        escaped("execveat ran the swapped-in untrusted file %d of 300 times", evil_runs);
    else
        note("execveat-swaps=evil:0/300");
}

/* Set-uid planting: chmod 04755 on a file in the allowed directory. */
static void chmod_setuid(void) {
    make_file(data_path("suid"), "x");
    refused("chmod(04755)", chmod(data_path("suid"), 04755));
    check_no_setid(data_path("suid"));
}

/* Set-gid planting with fchmod. */
static void fchmod_setgid(void) {
    make_file(data_path("sgid"), "x");
    int fd = open(data_path("sgid"), O_RDWR);
    refused("fchmod(02755)", fchmod(fd, 02755));
    close(fd);
    check_no_setid(data_path("sgid"));
}

/* Set-uid through fchmodat and fchmodat2 (Linux 6.6: the flags argument). */
static void fchmodat_setuid(void) {
    make_file(data_path("suid2"), "x");
    refused("fchmodat(06755)", fchmodat(AT_FDCWD, data_path("suid2"), 06755, 0));
    refused("fchmodat2(04755)", syscall(452, AT_FDCWD, data_path("suid2"), 04755, 0));
    check_no_setid(data_path("suid2"));
}

/* Set-uid through the creation mode of open(O_CREAT), creat and openat2. */
static void create_setuid(void) {
    unlink(data_path("c1"));
    unlink(data_path("c2"));
    unlink(data_path("c3"));
    int fd = open(data_path("c1"), O_WRONLY | O_CREAT | O_EXCL, 04777);
    if (fd >= 0)
        close(fd);
    fd = creat(data_path("c2"), 06777);
    if (fd >= 0)
        close(fd);
    struct open_how how = {.flags = O_WRONLY | O_CREAT | O_EXCL, .mode = 02777};
    long fd2 = syscall(SYS_openat2, AT_FDCWD, data_path("c3"), &how, sizeof how);
    if (fd2 >= 0)
        close((int)fd2);
    check_no_setid(data_path("c1"));
    check_no_setid(data_path("c2"));
    check_no_setid(data_path("c3"));
    note("created-without-set-id");
}

/* mknod of a regular file with set-uid bits. */
static void mknod_setuid(void) {
    unlink(data_path("m1"));
    refused("mknod(S_IFREG|04755)", mknod(data_path("m1"), S_IFREG | 04755, 0));
    check_no_setid(data_path("m1"));
}

/* File capabilities planted through the security.capability extended attribute. */
static void file_capabilities(void) {
    make_file(data_path("caps"), "x");
    /* vfs_cap_data v2: CAP_SYS_ADMIN (21) permitted and effective */
    uint32_t cap[5] = {0x02000001, 1u << 21, 0, 0, 0};
    refused("setxattr(security.capability)",
            setxattr(data_path("caps"), "security.capability", cap, sizeof cap, 0));
    refused("getxattr(security.capability)",
            getxattr(data_path("caps"), "security.capability", cap, sizeof cap));
}

/* A set-gid directory: files created in it would inherit its group on the host. */
static void mkdir_setgid(void) {
    rmdir(data_path("sgid-dir"));
    mkdir(data_path("sgid-dir"), 02777);
    refused("chmod(dir,02777)", chmod(data_path("sgid-dir"), 02777));
    struct stat st;
    if (stat(data_path("sgid-dir"), &st) == 0 && (st.st_mode & S_ISGID))
        escaped("data/sgid-dir is set-gid");
}

/* Device nodes: a character device for /dev/mem (1,1) gives all physical memory. */
static void mknod_char_device(void) {
    unlink(data_path("mem"));
    refused("mknod(S_IFCHR 1:1)", mknod(data_path("mem"), S_IFCHR | 0666, makedev(1, 1)));
    refused("mknodat(S_IFCHR 1:3)", mknodat(AT_FDCWD, data_path("null"), S_IFCHR | 0666,
                                            makedev(1, 3)));
}

/* Device nodes: a block device for the host's disk (8,0: /dev/sda). */
static void mknod_block_device(void) {
    unlink(data_path("sda"));
    refused("mknod(S_IFBLK 8:0)", mknod(data_path("sda"), S_IFBLK | 0666, makedev(8, 0)));
}

/* Host devices by path: physical memory, the kernel log, the disks. */
static void host_devices(void) {
    try_open("open(/dev/mem)", "/dev/mem", O_RDONLY);
    try_open("open(/dev/kmsg,O_WRONLY)", "/dev/kmsg", O_WRONLY);
    try_open("open(/dev/sda)", "/dev/sda", O_RDONLY);
    try_open("open(/proc/kcore)", "/proc/kcore", O_RDONLY);
}

/* io_uring: its operations (openat, connect) bypass seccomp filters (Google's kCTF/gVisor
 * reasons for disabling it). */
static void io_uring(void) {
    char params[120] = {0};
    refused("io_uring_setup", syscall(425, 8, params));
}

/* clone3: its flags live in memory, where a seccomp filter cannot look. */
static void clone3_namespaces(void) {
    uint64_t args[11] = {0x10000000 | 0x00020000}; /* CLONE_NEWUSER | CLONE_NEWNS */
    long rc = syscall(435, args, sizeof args);
    if (rc == 0)
        _exit(0);
    refused("clone3(NEWUSER|NEWNS)", rc);
}

/* ptrace the parent (the runtime) to inject code (classic sandbox escape). */
static void ptrace_parent(void) {
    refused("ptrace(ATTACH,ppid)", syscall(SYS_ptrace, PTRACE_ATTACH, getppid(), 0, 0));
    refused("ptrace(SEIZE,1)", syscall(SYS_ptrace, 0x4206, 1, 0, 0));
}

/* PTRACE_TRACEME: let the parent trace us, the other direction. */
static void ptrace_traceme(void) {
    refused("ptrace(TRACEME)", syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0));
}

/* Read and write another process's memory without ptrace (process_vm_*). */
static void process_vm(void) {
    char buf[16];
    struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
    refused("process_vm_readv(ppid)", process_vm_readv(getppid(), &local, 1, &remote, 1, 0));
    refused("process_vm_writev(ppid)", process_vm_writev(getppid(), &local, 1, &remote, 1, 0));
}

/* Steal a descriptor from the runtime with pidfd_getfd. */
static void pidfd_getfd(void) {
    long pidfd = syscall(SYS_pidfd_open, getppid(), 0);
    if (pidfd < 0) {
        note("pidfd_open=%s", strerrorname_np(errno));
        pidfd = syscall(SYS_pidfd_open, getpid(), 0);
    }
    for (int fd = 0; fd < 16; fd++) {
        long got = syscall(438, pidfd, fd, 0);
        if (got >= 0 && getppid() != 0) {
            escaped("pidfd_getfd took descriptor %d", fd);
            close((int)got);
            break;
        }
    }
    note("pidfd_getfd=%s", strerrorname_np(errno));
}

/* kcmp: compare kernel objects of two processes (address-space and file probing). */
static void kcmp(void) {
    refused("kcmp(self,ppid,KCMP_FILE)", syscall(SYS_kcmp, getpid(), getppid(), 0, 0, 0));
}

/* File handles: open_by_handle_at with a forged handle reaches any inode of the file system
 * ("Shocker", the 2014 Docker escape). */
static void file_handles(void) {
    struct {
        unsigned int bytes;
        int type;
        unsigned char data[128];
    } handle = {8, 1, {2, 0, 0, 0, 0, 0, 0, 0}}; /* the root inode of an ext4 file system */
    int mount_id;
    refused("name_to_handle_at", syscall(SYS_name_to_handle_at, AT_FDCWD, TRUSTED, &handle,
                                         &mount_id, 0));
    refused("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, &handle, O_RDONLY));
}

/* userfaultfd: the standard primitive for winning kernel races. */
static void userfaultfd(void) { refused("userfaultfd", syscall(SYS_userfaultfd, 0)); }

/* bpf: load a program into the host kernel. */
static void bpf(void) {
    char attr[128] = {0};
    refused("bpf(PROG_LOAD)", syscall(SYS_bpf, 5, attr, sizeof attr));
    refused("bpf(MAP_CREATE)", syscall(SYS_bpf, 0, attr, sizeof attr));
}

/* perf_event_open: kernel profiling, a long list of local exploits. */
static void perf_event(void) {
    char attr[128] = {0};
    attr[4] = 112; /* size */
    refused("perf_event_open", syscall(SYS_perf_event_open, attr, 0, -1, -1, 0));
}

/* The kernel keyring: the host user's keys (Kerberos tickets, disk keys). */
static void keyring(void) {
    char buf[256];
    refused("keyctl(READ,@u)", syscall(SYS_keyctl, 11 /* KEYCTL_READ */, -4 /* @u */, buf,
                                       sizeof buf));
    refused("add_key", syscall(SYS_add_key, "user", "pylos-escape", "x", 1, -4));
    refused("request_key", syscall(SYS_request_key, "user", "pylos-escape", NULL, 0));
}

/* Kernel modules and kexec: replace the host kernel. */
static void kernel_code(void) {
    refused("init_module", syscall(SYS_init_module, "", 0, ""));
    refused("finit_module", syscall(SYS_finit_module, 0, "", 0));
    refused("delete_module", syscall(SYS_delete_module, "ext4", 0));
    refused("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
}

/* Port I/O (iopl/ioperm): talk to hardware directly. */
static void port_io(void) {
    refused("iopl(3)", syscall(SYS_iopl, 3));
    refused("ioperm(0x60)", syscall(SYS_ioperm, 0x60, 1, 1));
}

/* Host-wide switches: process accounting to a host file, swap, reboot. */
static void host_switches(void) {
    refused("acct(data/acct)", syscall(SYS_acct, data_path("acct")));
    refused("swapon", syscall(SYS_swapon, data_path("swap"), 0));
    refused("reboot(CAD_OFF)", syscall(SYS_reboot, 0xfee1dead, 672274793, 0, NULL));
}

/* mount: a fresh tmpfs, or a bind of the root, to see what lies under the view. */
static void mount_classic(void) {
    mkdir(data_path("mnt"), 0755);
    refused("mount(tmpfs)", mount("none", data_path("mnt"), "tmpfs", 0, NULL));
    refused("mount(/,MS_BIND|MS_REC)", mount("/", data_path("mnt"), NULL, MS_BIND | MS_REC, NULL));
    refused("mount(proc)", mount("proc", data_path("mnt"), "proc", 0, NULL));
}

/* umount a mount of the view to uncover what is beneath it. */
static void umount_view(void) {
    refused("umount2(data,MNT_DETACH)", umount2(DATA, MNT_DETACH));
    refused("umount2(/,MNT_DETACH)", umount2("/", MNT_DETACH));
}

/* The new mount API (fsopen/fsmount/move_mount, open_tree): same power, other calls. */
static void mount_api_new(void) {
    refused("fsopen(tmpfs)", syscall(SYS_fsopen, "tmpfs", 0));
    refused("fspick(/)", syscall(SYS_fspick, AT_FDCWD, "/", 0));
    refused("open_tree(/,CLONE)", syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */));
    refused("move_mount", syscall(SYS_move_mount, AT_FDCWD, DATA, AT_FDCWD, "/", 0));
    refused("mount_setattr", syscall(SYS_mount_setattr, AT_FDCWD, "/", 0, NULL, 0));
}

/* pivot_root and the classic chroot escape (chroot into a subdirectory, then `..`). */
static void chroot_escape(void) {
    mkdir(data_path("jail"), 0755);
    refused("chroot(data/jail)", chroot(data_path("jail")));
    refused("pivot_root", syscall(SYS_pivot_root, DATA, data_path("jail")));
}

/* unshare a user namespace: full capabilities over new mount namespaces. */
static void unshare_namespaces(void) {
    refused("unshare(NEWUSER)", unshare(CLONE_NEWUSER));
    refused("unshare(NEWNS)", unshare(CLONE_NEWNS));
    refused("unshare(NEWNET)", unshare(CLONE_NEWNET));
}

/* setns into another process's namespaces (nsenter). */
static void setns_other(void) {
    int fd = open("/proc/1/ns/mnt", O_RDONLY);
    refused("setns(/proc/1/ns/mnt)", setns(fd, 0));
    if (fd >= 0)
        close(fd);
    fd = open("/proc/self/ns/user", O_RDONLY);
    refused("setns(/proc/self/ns/user)", setns(fd, CLONE_NEWUSER));
    if (fd >= 0)
        close(fd);
}

/* clone with namespace flags, raw (glibc's wrappers go through clone3 or clone). */
static void clone_namespace_flags(void) {
    long rc = syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD, NULL, NULL, NULL, NULL);
    if (rc == 0)
        _exit(0);
    refused("clone(NEWUSER|NEWNS)", rc);
    /* the same flags with bits above 32 set: the kernel takes the low 32 */
    rc = syscall(SYS_clone, 0xff00000000UL | CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, NULL);
    if (rc == 0)
        _exit(0);
    refused("clone(NEWPID|high bits)", rc);
    if (rc > 0)
        waitpid((pid_t)rc, NULL, 0);
}

/* TIOCSTI: type commands into the terminal of the shell that started pylos (CVE-2017-5226,
 * bubblewrap; CVE-2016-9016 firejail). The test gives a terminal as standard input. */
static void tiocsti(void) {
    const char *text = "id\n";
    for (const char *c = text; *c; c++)
        refused("ioctl(0,TIOCSTI)", ioctl(0, TIOCSTI, c));
    int tty = open("/dev/tty", O_RDWR);
    if (tty >= 0) {
        refused("ioctl(/dev/tty,TIOCSTI)", ioctl(tty, TIOCSTI, "x"));
        close(tty);
    } else {
        note("open(/dev/tty)=%s", strerrorname_np(errno));
    }
}

/* TIOCLINUX: the console's selection paste, the other injection ioctl. */
static void tioclinux(void) {
    char subcode[2] = {3 /* TIOCL_PASTESEL */, 0};
    refused("ioctl(0,TIOCLINUX)", ioctl(0, TIOCLINUX, subcode));
}

static void write_file_refused(const char *what, const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        note("%s=%s", what, strerrorname_np(errno));
        return;
    }
    if (write(fd, text, strlen(text)) >= 0)
        escaped("%s: wrote %s", what, path);
    else
        note("%s=write:%s", what, strerrorname_np(errno));
    close(fd);
}

/* core_pattern: a "|program" pattern runs that program as root on the host at the next crash
 * (the classic privileged-container escape). */
static void core_pattern(void) {
    char pattern[600];
    snprintf(pattern, sizeof pattern, "|%s/evil", DATA);
    write_file_refused("core_pattern", "/proc/sys/kernel/core_pattern", pattern);
}

/* sysrq-trigger: reboot or crash the host ('h' only prints help, if it ever got through). */
static void sysrq(void) {
    write_file_refused("sysrq-trigger", "/proc/sysrq-trigger", "h");
    write_file_refused("sysrq", "/proc/sys/kernel/sysrq", "1");
}

/* modprobe path: the kernel runs it as root for an unknown binary format. */
static void modprobe_path(void) {
    write_file_refused("modprobe", "/proc/sys/kernel/modprobe", "/tmp/evil");
    write_file_refused("uevent_helper", "/sys/kernel/uevent_helper", "/tmp/evil");
}

/* cgroup v1 release_agent (CVE-2022-0492): the kernel runs it as root on the host. */
static void cgroup_release_agent(void) {
    write_file_refused("release_agent", "/sys/fs/cgroup/release_agent", "/tmp/evil");
    mkdir(data_path("cgroup"), 0755);
    refused("mount(cgroup,release_agent)",
            mount("cgroup", data_path("cgroup"), "cgroup", 0, "rdma,release_agent=/tmp/evil"));
}

/* x32 system calls: the same numbers with bit 30 set, a filter written for x86_64 only sees
 * a different number (CVE-2014-0038's entry point). */
static void x32_syscalls(void) {
    refused("x32 open(secret)", syscall(0x40000000 | SYS_open, SECRET, O_RDONLY));
    refused("x32 openat(plain)", syscall(0x40000000 | SYS_openat, AT_FDCWD, PLAIN, O_RDONLY));
    refused("x32 mount", syscall(0x40000000 | SYS_mount, "none", DATA, "tmpfs", 0, NULL));
}

/* int 0x80: the i386 entry point, other numbers (5 = open, 21 = mount), other arch. */
static void int80(int number, const char *what) {
    pid_t child = fork();
    if (child == 0) {
        long rc;
        __asm__ volatile("int $0x80" : "=a"(rc) : "a"(number), "b"(0), "c"(0), "d"(0) : "memory");
        _exit(rc >= 0 ? 42 : 3);
    }
    int code = wait_code(child);
    if (code == 42)
        escaped("%s through int 0x80 succeeded", what);
    else
        note("int80-%s=exit:%d", what, code);
}

static void int80_open(void) { int80(5, "open"); }
static void int80_mount(void) { int80(21, "mount"); }

/* A seccomp filter of our own that allows everything: stacked filters never loosen. */
static void seccomp_allow_all(void) {
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {1, allow};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    note("installed=%ld", syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
    try_open("open(plain)", PLAIN, O_RDONLY);
    try_open("open(secret)", SECRET, O_RDONLY);
}

static int listener = -1;

static void *continue_everything(void *arg) {
    (void)arg;
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    for (;;) {
        memset(&req, 0, sizeof req);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0)
            return NULL;
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
}

/* A user-notification filter of our own whose listener answers CONTINUE: for equal actions
 * the newest filter wins, so its listener, not the runtime's, would decide every open. */
static void seccomp_own_listener(void) {
    struct sock_filter notify[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {4, notify};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                            SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (refused("seccomp(NEW_LISTENER)", listener) < 0)
        return;
    pthread_t t;
    pthread_create(&t, NULL, continue_everything, NULL);
    int fd = openat(AT_FDCWD, PLAIN, O_RDONLY);
    if (fd >= 0)
        escaped("the own listener let openat(plain) through");
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Every trapped call with random registers, high bits set: a handler that trips over a value
 * must answer an errno and keep serving (fixed seed: the same 12000 calls each run). */
static void trapped_calls_random_registers(void) {
    static const long calls[] = {
        SYS_open, SYS_openat, SYS_openat2, SYS_creat, SYS_execve, SYS_execveat,
        SYS_chmod, SYS_fchmod, SYS_fchmodat, 452 /* fchmodat2 */, SYS_chown, SYS_lchown,
        SYS_fchown, SYS_fchownat, SYS_utime, SYS_utimes, SYS_futimesat, SYS_utimensat,
        SYS_mknod, SYS_mknodat};
    static char junk[4][300];
    mkdir(data_path("fuzz"), 0755);
    if (chdir(data_path("fuzz")) != 0)
        note("chdir=%s", strerrorname_np(errno));
    int made = 0;
    for (size_t c = 0; c < sizeof calls / sizeof *calls; c++)
        for (int i = 0; i < 600; i++) {
            for (int j = 0; j < 4; j++) {
                for (int k = 0; k < 299; k++)
                    junk[j][k] = (char)(rnd() % 255 + 1);
                junk[j][rnd() % 299] = 0;
            }
            uint64_t a[6];
            for (int j = 0; j < 6; j++) {
                uint64_t r = rnd();
                switch (r % 5) {
                case 0: a[j] = (uintptr_t)junk[j % 4]; break;           /* a valid pointer */
                case 1: a[j] = r; break;                                 /* any 64 bits */
                case 2: a[j] = (r & 0xFFFFFFFF00000000ULL) | (r % 8); break; /* high bits */
                case 3: a[j] = 0; break;
                default: a[j] = (uint64_t)-(int64_t)(r % 200); break;   /* negative */
                }
            }
            long rc = syscall(calls[c], a[0], a[1], a[2], a[3], a[4], a[5]);
            if (rc >= 0 && (calls[c] == SYS_open || calls[c] == SYS_openat ||
                            calls[c] == SYS_openat2 || calls[c] == SYS_creat)) {
                made++;
                close((int)rc);
            }
        }
    if (chdir("/") != 0)
        note("chdir=%s", strerrorname_np(errno));
    note("calls=%zu,opened=%d", sizeof calls / sizeof *calls * 600, made);
}

/* A trusted file the host tampered with, behind a cache the host poisoned (the test does
 * both before the run): only the verified bytes may ever be served. */
static void tampered_trusted_file(void) {
    int fd = open(TRUSTED, O_RDONLY);
    if (fd < 0) {
        note("open(trusted)=%s", strerrorname_np(errno));
        return;
    }
    char buf[256] = {0};
    if (read(fd, buf, sizeof buf - 1) > 0 && strstr(buf, "TAMPERED"))
        escaped("the tampered trusted file was served");
    else
        note("read(trusted)=original");
    close(fd);
}

static void abstract_address(struct sockaddr_un *addr, socklen_t *len, const char *suffix) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    int n = snprintf(addr->sun_path + 1, sizeof addr->sun_path - 1, "%s%s", abstract_name, suffix);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

/* A host service on an abstract UNIX socket (D-Bus, X11, agents), and the host directory
 * descriptor it hands over with SCM_RIGHTS. */
static void abstract_socket_host(void) {
    struct sockaddr_un addr;
    socklen_t len;
    abstract_address(&addr, &len, "");
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (refused("connect(@host)", connect(s, (struct sockaddr *)&addr, len)) < 0)
        return;
    char byte;
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    if (recvmsg(s, &msg, 0) > 0 && CMSG_FIRSTHDR(&msg)) {
        int fd;
        memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof fd);
        int secret = openat(fd, "secret.txt", O_RDONLY);
        if (secret >= 0)
            check_fd("SCM_RIGHTS dir -> secret.txt", secret);
    }
}

/* A datagram to a host abstract socket (syslog-style services). */
static void abstract_datagram_host(void) {
    struct sockaddr_un addr;
    socklen_t len;
    abstract_address(&addr, &len, "-dgram");
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    refused("sendto(@host-dgram)", sendto(s, "LEAK", 4, 0, (struct sockaddr *)&addr, len));
}

/* Signals to a host process outside the enclave (kill(2) as root inside). */
static void signal_host_process(void) {
    refused("kill(host,SIGKILL)", kill(host_pid, SIGKILL));
    long pidfd = syscall(SYS_pidfd_open, host_pid, 0);
    if (pidfd >= 0)
        refused("pidfd_send_signal(host)", syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0));
    else
        note("pidfd_open(host)=%s", strerrorname_np(errno));
}

struct attempt {
    const char *name;
    void (*run)(void);
};

#define ATTEMPT(name, fn) {name, fn}
static const struct attempt ATTEMPTS[] = {
    ATTEMPT("inherited-descriptors-closed", inherited_descriptors_closed),
    ATTEMPT("inherited-dir-fchdir", inherited_dir_fchdir),
    ATTEMPT("inherited-dir-openat", inherited_dir_openat),
    ATTEMPT("inherited-dir-magic-link", inherited_dir_magic_link),
    ATTEMPT("inherited-opath-reopen", inherited_opath_reopen),
    ATTEMPT("inherited-socket", inherited_socket),
    ATTEMPT("inherited-stdio-metadata", inherited_stdio_metadata),
    ATTEMPT("proc-pid-magic-links", proc_pid_magic_links),
    ATTEMPT("proc-self-root-dotdot", proc_self_root_dotdot),
    ATTEMPT("proc-self-exe-overwrite", proc_self_exe_overwrite),
    ATTEMPT("proc-map-files-write", proc_map_files_write),
    ATTEMPT("proc-parent-memory", proc_parent_memory),
    ATTEMPT("absolute-path", absolute_path),
    ATTEMPT("dotdot-traversal", dotdot_traversal),
    ATTEMPT("unlisted-file", unlisted_file),
    ATTEMPT("write-trusted", write_trusted),
    ATTEMPT("symlink-absolute", symlink_absolute),
    ATTEMPT("symlink-relative", symlink_relative),
    ATTEMPT("symlink-race", symlink_race),
    ATTEMPT("directory-rename-race", directory_rename_race),
    ATTEMPT("dirfd-dotdot-race", dirfd_dotdot_race),
    ATTEMPT("openat2-resolve", openat2_resolve),
    ATTEMPT("hard-link-trusted", hard_link_trusted),
    ATTEMPT("hard-link-secret-in", hard_link_secret_in),
    ATTEMPT("hard-link-setuid-binary", hard_link_setuid_binary),
    ATTEMPT("rename-trusted", rename_trusted),
    ATTEMPT("tmpfile-linkat", tmpfile_linkat),
    ATTEMPT("host-metadata", host_metadata),
    ATTEMPT("opath-execveat-untrusted", opath_execveat_untrusted),
    ATTEMPT("exec-untrusted", exec_untrusted),
    ATTEMPT("exec-untrusted-interpreter", exec_untrusted_interpreter),
    ATTEMPT("exec-flip-thread", exec_flip_thread),
    ATTEMPT("exec-flip-tmpfs", exec_flip_tmpfs),
    ATTEMPT("exec-flip-memfd", exec_flip_memfd),
    ATTEMPT("execveat-descriptor-swap", execveat_descriptor_swap),
    ATTEMPT("personality-read-implies-exec", personality_read_implies_exec),
    ATTEMPT("chmod-setuid", chmod_setuid),
    ATTEMPT("fchmod-setgid", fchmod_setgid),
    ATTEMPT("fchmodat-setuid", fchmodat_setuid),
    ATTEMPT("create-setuid", create_setuid),
    ATTEMPT("mknod-setuid", mknod_setuid),
    ATTEMPT("file-capabilities", file_capabilities),
    ATTEMPT("mkdir-setgid", mkdir_setgid),
    ATTEMPT("mknod-char-device", mknod_char_device),
    ATTEMPT("mknod-block-device", mknod_block_device),
    ATTEMPT("host-devices", host_devices),
    ATTEMPT("io-uring", io_uring),
    ATTEMPT("clone3-namespaces", clone3_namespaces),
    ATTEMPT("ptrace-parent", ptrace_parent),
    ATTEMPT("ptrace-traceme", ptrace_traceme),
    ATTEMPT("process-vm", process_vm),
    ATTEMPT("pidfd-getfd", pidfd_getfd),
    ATTEMPT("kcmp", kcmp),
    ATTEMPT("file-handles", file_handles),
    ATTEMPT("userfaultfd", userfaultfd),
    ATTEMPT("bpf", bpf),
    ATTEMPT("perf-event-open", perf_event),
    ATTEMPT("keyring", keyring),
    ATTEMPT("kernel-code", kernel_code),
    ATTEMPT("port-io", port_io),
    ATTEMPT("host-switches", host_switches),
    ATTEMPT("mount-classic", mount_classic),
    ATTEMPT("umount-view", umount_view),
    ATTEMPT("mount-api-new", mount_api_new),
    ATTEMPT("chroot-escape", chroot_escape),
    ATTEMPT("unshare-namespaces", unshare_namespaces),
    ATTEMPT("setns-other", setns_other),
    ATTEMPT("clone-namespace-flags", clone_namespace_flags),
    ATTEMPT("tiocsti", tiocsti),
    ATTEMPT("tioclinux", tioclinux),
    ATTEMPT("core-pattern", core_pattern),
    ATTEMPT("sysrq", sysrq),
    ATTEMPT("modprobe-path", modprobe_path),
    ATTEMPT("cgroup-release-agent", cgroup_release_agent),
    ATTEMPT("x32-syscalls", x32_syscalls),
    ATTEMPT("int80-open", int80_open),
    ATTEMPT("int80-mount", int80_mount),
    ATTEMPT("seccomp-allow-all", seccomp_allow_all),
    ATTEMPT("seccomp-own-listener", seccomp_own_listener),
    ATTEMPT("trapped-calls-random-registers", trapped_calls_random_registers),
    ATTEMPT("tampered-trusted-file", tampered_trusted_file),
    ATTEMPT("abstract-socket-host", abstract_socket_host),
    ATTEMPT("abstract-datagram-host", abstract_datagram_host),
    ATTEMPT("signal-host-process", signal_host_process),
};

/* Not an attempt: enclave processes still talk over abstract sockets (Landlock's scope
 * confines them to the enclave, it does not take them away). */
static int abstract_inside(void) {
    struct sockaddr_un addr;
    socklen_t len;
    abstract_address(&addr, &len, "-inside");
    int server = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(server, (struct sockaddr *)&addr, len) != 0 || listen(server, 1) != 0) {
        printf("bind:%s\n", strerrorname_np(errno));
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&addr, len) != 0)
            _exit(3);
        _exit(write(s, "hello", 5) == 5 ? 0 : 4);
    }
    int conn = accept(server, NULL, NULL);
    char buf[8] = {0};
    ssize_t n = conn >= 0 ? read(conn, buf, sizeof buf - 1) : -1;
    int code = wait_code(child);
    printf("abstract inside: child %d, read %zd '%s'\n", code, n, buf);
    return code == 0 && !strcmp(buf, "hello") ? 0 : 1;
}

/* Not an attempt: memfds still work as memory (made by the supervisor, sealed non-exec). */
static int memfd_works(void) {
    int fd = memfd_create("works", MFD_CLOEXEC);
    char buf[8] = {0};
    int wrote = fd >= 0 && write(fd, "hello", 5) == 5 && pread(fd, buf, 5, 0) == 5;
    char *map = fd >= 0 ? mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    int seals = fd >= 0 ? fcntl(fd, F_GET_SEALS) : -1;
    int chmod_x = fd >= 0 ? fchmod(fd, 0755) : 0;
    errno = 0;
    long exec_flag = syscall(SYS_memfd_create, "x", 0x10 /* MFD_EXEC */);
    const char *exec_errno = strerrorname_np(errno);
    long bad = syscall(SYS_memfd_create, "x", 0x1000);
    printf("memfd: fd %s, rw %s, mmap %s, seal-exec %s, chmod+x %s, MFD_EXEC %s, "
           "bad flags %s, cloexec %s\n", fd >= 0 ? "ok" : "failed", wrote && !strcmp(buf, "hello")
           ? "ok" : "failed", map != MAP_FAILED && !memcmp(map, "hello", 5) ? "ok" : "failed",
           seals >= 0 && (seals & 0x20 /* F_SEAL_EXEC */) ? "yes" : "no",
           chmod_x == 0 ? "allowed" : strerrorname_np(errno), exec_flag < 0 ? exec_errno : "made",
           bad < 0 ? strerrorname_np(errno) : "made",
           fd >= 0 && fcntl(fd, F_GETFD) & FD_CLOEXEC ? "yes" : "no");
    return 0;
}

int main(int argc, char **argv) {
    char self[512] = {0};
    if (argc >= 2 && !strcmp(argv[1], "--evil")) {
        /* run as the untrusted copy: /proc/self/exe names data/evil or the memfd */
        if (readlink("/proc/self/exe", self, sizeof self - 1) > 0 && strstr(self, "evil")) {
            printf("ESCAPED: the untrusted binary %s ran\n", self);
            return 42;
        }
        return 0;
    }
    SECRET = getenv("ESC_SECRET");
    HOSTDIR = getenv("ESC_HOSTDIR");
    DATA = getenv("ESC_DATA");
    TRUSTED = getenv("ESC_TRUSTED");
    PLAIN = getenv("ESC_PLAIN");
    APP = getenv("ESC_APP");
    SUID = getenv("ESC_SUID");
    TMP = getenv("ESC_TMP");
    if (!SECRET || !HOSTDIR || !DATA || !TRUSTED || !PLAIN || !APP || !SUID || !TMP || argc < 4) {
        fprintf(stderr, "usage: attempts NAME HOST_PID ABSTRACT_NAME (with the ESC_* env)\n");
        return 2;
    }
    host_pid = atoi(argv[2]);
    abstract_name = argv[3];
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(argv[1], "--abstract-inside"))
        return abstract_inside();
    if (!strcmp(argv[1], "--memfd-works"))
        return memfd_works();
    for (size_t i = 0; i < sizeof ATTEMPTS / sizeof *ATTEMPTS; i++) {
        if (strcmp(argv[1], ATTEMPTS[i].name))
            continue;
        ATTEMPTS[i].run();
        if (!escapes)
            printf("HELD %s: %s\n", ATTEMPTS[i].name, notes);
        int fd = open(APP, O_RDONLY);
        char magic[4] = {0};
        if (fd >= 0 && read(fd, magic, 4) == 4 && !memcmp(magic, "\x7f" "ELF", 4))
            printf("SERVED\n");
        return escapes ? 1 : 0;
    }
    fprintf(stderr, "unknown attempt %s\n", argv[1]);
    return 2;
}
