/* Trapped system calls with hostile registers, issued raw (syscall(2)): bad pointers (NULL, 1,
 * kernel addresses, a string running into an unmapped page), high bits in 32-bit arguments,
 * unknown flag bits, over-long paths, bad open_how sizes. One line per call: "<name> OK" or
 * "<name> <errno name>". Run natively and in an enclave from the enclave's directory: "app",
 * "trusted.txt" and "data/..." name the same files in both (the enclave starts in "/").
 *
 *   errnos cases           fixed cases
 *   errnos fuzz N SEED     N trapped calls with random registers, then an ordinary open
 *   errnos mocked N SEED   N calls of getppid (mocked to 42) with random registers
 *   errnos subprocess      fork, vfork and clone (subprocesses disallowed)
 *   errnos setid           creating files with set-id bits in their mode, every open kind
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KERNEL_ADDRESS 0xffff800000000000UL
#define AT_FDCWD_64 ((unsigned long)(unsigned int)AT_FDCWD) /* AT_FDCWD as a 32-bit int */
#define HIGH 0x5a5a5a5a00000000UL                          /* garbage in the upper 32 bits */
#define RESOLVE_NO_XDEV 0x01UL
#define RESOLVE_NO_MAGICLINKS 0x02UL
#define RESOLVE_NO_SYMLINKS 0x04UL
#define RESOLVE_BENEATH 0x08UL
#define RESOLVE_IN_ROOT 0x10UL
#define RESOLVE_CACHED 0x20UL
#define KERNEL_O_LARGEFILE 0100000UL /* 0 in glibc's headers on 64-bit */
#define NAMESPACE_FLAGS 0x7E0200FFUL /* CLONE_NEW* and the exit signal byte */
#define VALID_OPEN_FLAGS 037777703UL  /* Linux's, x86_64 */
#define AT_EXECVE_CHECK_FLAG 0x10000UL
#define O_TMPFILE_BIT (O_TMPFILE & ~O_DIRECTORY)

struct how {
    uint64_t flags, mode, resolve;
};

static char long_path[5000];  /* 4999 bytes */
static char path4096[4097];   /* 4096 bytes: no NUL within PATH_MAX */
static char path4095[4096];   /* "././...": 4095 bytes, names "." */
static char *unterminated;    /* runs into a PROT_NONE page */
static char *guard_page;      /* PROT_NONE */
static unsigned char howbuf[8192] __attribute__((aligned(4096)));
static char *argv_ok[] = {"app", "execed", NULL};
static char *argv_bad[] = {"app", (char *)1, NULL};
static char *envp_ok[] = {"A=1", NULL};
static char *envp_kernel[] = {(char *)KERNEL_ADDRESS, NULL};

static void report(const char *name, long ret, int err) {
    if (ret >= 0)
        printf("%s OK\n", name);
    else
        printf("%s %s\n", name, strerrorname_np(err));
}

/* A call returning a descriptor: reported, then closed. */
static void fdcall(const char *name, long ret) {
    int err = errno;
    report(name, ret, err);
    if (ret >= 0)
        close((int)ret);
}

static long sys_openat2(unsigned long dirfd, const void *path, const void *how, unsigned long size) {
    return syscall(SYS_openat2, dirfd, path, how, size);
}

static void openat2_case(const char *name, unsigned long dirfd, const void *path, uint64_t flags,
                         uint64_t mode, uint64_t resolve) {
    struct how how = {flags, mode, resolve};
    fdcall(name, sys_openat2(dirfd, path, &how, sizeof how));
}

static void setup(void) {
    memset(long_path, 'a', sizeof long_path - 1);
    memset(path4096, 'a', sizeof path4096 - 1);
    for (size_t i = 0; i + 1 < sizeof path4095 - 1; i += 2)
        memcpy(path4095 + i, "./", 2);
    path4095[sizeof path4095 - 2] = '.';
    char *pages = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED)
        exit(2);
    memset(pages, 'a', 4096);
    mprotect(pages + 4096, 4096, PROT_NONE);
    unterminated = pages + 100;
    guard_page = pages + 4096;
}

static void unlink_created(void) {
    const char *names[] = {"data/e-open", "data/e-openat", "data/e-creat", "data/e-openat2",
                           "data/e-lnk", "data/fz", "data/fz2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        unlink(names[i]);
}

static void open_cases(int datafd, int okfd) {
    fdcall("open-null", syscall(SYS_open, NULL, O_RDONLY));
    fdcall("open-one", syscall(SYS_open, 1UL, O_RDONLY));
    fdcall("open-kernel", syscall(SYS_open, KERNEL_ADDRESS, O_RDONLY));
    fdcall("open-minus-one", syscall(SYS_open, ~0UL, O_RDONLY));
    fdcall("open-top-of-user", syscall(SYS_open, 0x7ffffffff000UL, O_RDONLY));
    fdcall("open-unterminated", syscall(SYS_open, unterminated, O_RDONLY));
    fdcall("open-guard", syscall(SYS_open, guard_page, O_RDONLY));
    fdcall("open-5000", syscall(SYS_open, long_path, O_RDONLY));
    fdcall("open-4096", syscall(SYS_open, path4096, O_RDONLY));
    fdcall("open-4095", syscall(SYS_open, path4095, O_RDONLY | O_DIRECTORY));
    fdcall("open-long-component", syscall(SYS_open, long_path + 4999 - 300, O_RDONLY));
    fdcall("open-empty", syscall(SYS_open, "", O_RDONLY));
    fdcall("open-missing", syscall(SYS_open, "missing", O_RDONLY));
    fdcall("open-high-flags", syscall(SYS_open, "data/ok.txt", HIGH | O_RDONLY));
    fdcall("open-unknown-flags", syscall(SYS_open, "data/ok.txt", 0x40000074UL | O_RDONLY));
    fdcall("open-sign-bit", syscall(SYS_open, "data/ok.txt", 0x80000000UL | O_RDONLY));
    fdcall("open-all-bits", syscall(SYS_open, "data", ~0UL));
    fdcall("open-mode-no-create", syscall(SYS_open, "data/ok.txt", O_RDONLY, ~0UL));
    fdcall("open-create-high-mode",
           syscall(SYS_open, "data/e-open", HIGH | O_CREAT | O_WRONLY, 0xffffffff0644UL));
    fdcall("open-directory-create", syscall(SYS_open, "data", O_DIRECTORY | O_CREAT, 0600));
    fdcall("open-tmpfile-no-dir", syscall(SYS_open, "data", (O_TMPFILE & ~O_DIRECTORY) | O_RDWR));
    fdcall("open-tmpfile-rdonly", syscall(SYS_open, "data", O_TMPFILE | O_RDONLY, 0600));
    fdcall("open-tmpfile", syscall(SYS_open, "data", O_TMPFILE | O_RDWR, 0600));
    fdcall("open-path-strips", syscall(SYS_open, "data/ok.txt", O_PATH | O_RDWR | O_TRUNC | O_CREAT));
    fdcall("open-notdir", syscall(SYS_open, "data/ok.txt", O_RDONLY | O_DIRECTORY));
    fdcall("open-through-file", syscall(SYS_open, "data/ok.txt/x", O_RDONLY));
    fdcall("open-dir-write", syscall(SYS_open, "data", O_WRONLY));
    fdcall("open-create-dir", syscall(SYS_open, "data", O_CREAT | O_RDONLY, 0600));

    fdcall("openat-fdcwd-high", syscall(SYS_openat, HIGH | AT_FDCWD_64, "data/ok.txt", O_RDONLY));
    fdcall("openat-dirfd-high", syscall(SYS_openat, HIGH | (unsigned)datafd, "ok.txt", O_RDONLY));
    fdcall("openat-dirfd-64bit-fdcwd", syscall(SYS_openat, (unsigned long)(long)AT_FDCWD,
                                               "data/ok.txt", O_RDONLY));
    fdcall("openat-badfd", syscall(SYS_openat, 1000UL, "ok.txt", O_RDONLY));
    fdcall("openat-negative-fd", syscall(SYS_openat, (unsigned long)-5L, "ok.txt", O_RDONLY));
    fdcall("openat-int-max-fd", syscall(SYS_openat, 0x7fffffffUL, "ok.txt", O_RDONLY));
    fdcall("openat-badfd-absolute", syscall(SYS_openat, 1000UL, "/dev/null", O_RDONLY));
    fdcall("openat-file-dirfd", syscall(SYS_openat, (unsigned long)okfd, "x", O_RDONLY));
    fdcall("openat-badfd-empty", syscall(SYS_openat, 1000UL, "", O_RDONLY));
    fdcall("openat-badfd-null", syscall(SYS_openat, 1000UL, NULL, O_RDONLY));
    fdcall("openat-null", syscall(SYS_openat, AT_FDCWD_64, NULL, O_RDONLY));
    fdcall("openat-kernel", syscall(SYS_openat, (unsigned long)datafd, KERNEL_ADDRESS, O_RDONLY));
    fdcall("openat-5000", syscall(SYS_openat, (unsigned long)datafd, long_path, O_RDONLY));
    fdcall("openat-bad-flags-first", syscall(SYS_openat, 1000UL, NULL, O_DIRECTORY | O_CREAT));
    fdcall("openat-high-flags", syscall(SYS_openat, (unsigned long)datafd, "ok.txt",
                                        0xffffffff00000000UL | O_RDONLY | O_NOFOLLOW));
    fdcall("openat-dotdot", syscall(SYS_openat, (unsigned long)datafd, "../trusted.txt", O_RDONLY));
    fdcall("openat-create-high-mode",
           syscall(SYS_openat, (unsigned long)datafd, "e-openat", O_CREAT | O_RDWR, HIGH | 0640));
    fdcall("openat-excl-exists", syscall(SYS_openat, (unsigned long)datafd, "e-openat",
                                         O_CREAT | O_EXCL | O_RDWR, 0640));

    fdcall("creat-null", syscall(SYS_creat, NULL, 0600));
    fdcall("creat-kernel", syscall(SYS_creat, KERNEL_ADDRESS, 0600));
    fdcall("creat-empty", syscall(SYS_creat, "", 0600));
    fdcall("creat-5000", syscall(SYS_creat, long_path, 0600));
    fdcall("creat-unterminated", syscall(SYS_creat, unterminated, 0600));
    fdcall("creat-high-mode", syscall(SYS_creat, "data/e-creat", ~0UL));
    fdcall("creat-dir", syscall(SYS_creat, "data", 0600));
}

static void openat2_cases(int datafd, int okfd) {
    struct how *how = (struct how *)howbuf;
    unsigned long cwd = AT_FDCWD_64;
    memset(howbuf, 0, sizeof howbuf);
    fdcall("openat2-size-0", sys_openat2(cwd, "data/ok.txt", how, 0));
    fdcall("openat2-size-23", sys_openat2(cwd, "data/ok.txt", how, 23));
    fdcall("openat2-size-24", sys_openat2(cwd, "data/ok.txt", how, 24));
    fdcall("openat2-size-32", sys_openat2(cwd, "data/ok.txt", how, 32));
    fdcall("openat2-size-4096", sys_openat2(cwd, "data/ok.txt", how, 4096));
    fdcall("openat2-size-4097", sys_openat2(cwd, "data/ok.txt", how, 4097));
    fdcall("openat2-size-huge", sys_openat2(cwd, "data/ok.txt", how, 1UL << 63));
    fdcall("openat2-size-huge-bad-how", sys_openat2(cwd, "data/ok.txt", NULL, ~0UL));
    howbuf[30] = 1;
    fdcall("openat2-trailing-nonzero", sys_openat2(cwd, "data/ok.txt", how, 32));
    fdcall("openat2-trailing-ignored", sys_openat2(cwd, "data/ok.txt", how, 24));
    howbuf[30] = 0;
    howbuf[4095] = 1;
    fdcall("openat2-trailing-last", sys_openat2(cwd, "data/ok.txt", how, 4096));
    howbuf[4095] = 0;
    fdcall("openat2-how-null", sys_openat2(cwd, "data/ok.txt", NULL, 24));
    fdcall("openat2-how-one", sys_openat2(cwd, "data/ok.txt", (void *)1, 24));
    fdcall("openat2-how-kernel", sys_openat2(cwd, "data/ok.txt", (void *)KERNEL_ADDRESS, 24));
    fdcall("openat2-how-top", sys_openat2(cwd, "data/ok.txt", (void *)0x7ffffffffff0UL, 24));
    fdcall("openat2-how-guard", sys_openat2(cwd, "data/ok.txt", guard_page - 16, 24));
    memset(guard_page - 24, 0, 24);
    fdcall("openat2-trailing-guard", sys_openat2(cwd, "data/ok.txt", guard_page - 24, 32));
    memset(guard_page - 32, 0, 32);
    guard_page[-1] = 1;
    fdcall("openat2-trailing-nonzero-guard", sys_openat2(cwd, "data/ok.txt", guard_page - 32, 64));
    memset(unterminated, 'a', 4096 - 100);

    openat2_case("openat2-flag-bit-32", cwd, "data/ok.txt", 1UL << 32, 0, 0);
    openat2_case("openat2-flag-bit-63", cwd, "data/ok.txt", 1UL << 63, 0, 0);
    openat2_case("openat2-flag-high", cwd, "data/ok.txt", HIGH | O_RDONLY, 0, 0);
    openat2_case("openat2-flag-bit-30", cwd, "data/ok.txt", 1UL << 30, 0, 0);
    openat2_case("openat2-flag-bit-2", cwd, "data/ok.txt", 04, 0, 0);
    openat2_case("openat2-flag-all", cwd, "data/ok.txt", ~0UL, 0, 0);
    openat2_case("openat2-cloexec", cwd, "data/ok.txt", O_CLOEXEC, 0, 0);
    openat2_case("openat2-largefile", cwd, "data/ok.txt", KERNEL_O_LARGEFILE, 0, 0);
    openat2_case("openat2-accmode-3", cwd, "data/ok.txt", 3, 0, 0);
    openat2_case("openat2-mode-no-create", cwd, "data/ok.txt", O_RDONLY, 0644, 0);
    openat2_case("openat2-mode-bit-12", cwd, "data/e-openat2", O_CREAT | O_WRONLY, 010000, 0);
    openat2_case("openat2-mode-bit-40", cwd, "data/e-openat2", O_CREAT | O_WRONLY, 1UL << 40, 0);
    openat2_case("openat2-create", cwd, "data/e-openat2", O_CREAT | O_WRONLY, 0640, 0);
    openat2_case("openat2-tmpfile-mode", cwd, "data", O_TMPFILE | O_RDWR, 0600, 0);
    openat2_case("openat2-tmpfile-no-dir", cwd, "data", (O_TMPFILE & ~O_DIRECTORY) | O_RDWR, 0600,
                 0);
    openat2_case("openat2-directory-create", cwd, "data", O_DIRECTORY | O_CREAT, 0600, 0);
    openat2_case("openat2-path-rdwr", cwd, "data/ok.txt", O_PATH | O_RDWR, 0, 0);
    openat2_case("openat2-path-nofollow", cwd, "data/ok.txt", O_PATH | O_NOFOLLOW | O_CLOEXEC, 0,
                 0);
    openat2_case("openat2-path-largefile", cwd, "data/ok.txt", O_PATH | KERNEL_O_LARGEFILE, 0, 0);
    openat2_case("openat2-resolve-0x40", cwd, "data/ok.txt", O_RDONLY, 0, 0x40);
    openat2_case("openat2-resolve-bit-63", cwd, "data/ok.txt", O_RDONLY, 0, 1UL << 63);
    openat2_case("openat2-beneath-in-root", cwd, "data/ok.txt", O_RDONLY, 0,
                 RESOLVE_BENEATH | RESOLVE_IN_ROOT);
    openat2_case("openat2-cached-create", cwd, "data/e-openat2", O_CREAT | O_RDWR, 0600,
                 RESOLVE_CACHED);
    openat2_case("openat2-cached-trunc", cwd, "data/e-openat2", O_TRUNC | O_RDWR, 0,
                 RESOLVE_CACHED);
    openat2_case("openat2-bad-flags-first", 1000, NULL, 1UL << 40, 0, 0);
    openat2_case("openat2-bad-resolve-first", 1000, NULL, O_RDONLY, 0, 0x80);
    openat2_case("openat2-path-null", cwd, NULL, O_RDONLY, 0, 0);
    openat2_case("openat2-path-kernel", cwd, (void *)KERNEL_ADDRESS, O_RDONLY, 0, 0);
    openat2_case("openat2-path-5000", cwd, long_path, O_RDONLY, 0, 0);
    openat2_case("openat2-path-unterminated", cwd, unterminated, O_RDONLY, 0, 0);
    openat2_case("openat2-path-empty", 1000, "", O_RDONLY, 0, 0);
    openat2_case("openat2-fdcwd-high", HIGH | AT_FDCWD_64, "data/ok.txt", O_RDONLY, 0, 0);
    openat2_case("openat2-badfd", 1000, "ok.txt", O_RDONLY, 0, 0);
    openat2_case("openat2-beneath-absolute", (unsigned)datafd, "/dev/null", O_RDONLY, 0,
                 RESOLVE_BENEATH);
    openat2_case("openat2-beneath-badfd-absolute", 1000, "/dev/null", O_RDONLY, 0,
                 RESOLVE_BENEATH);
    openat2_case("openat2-beneath-dotdot", (unsigned)datafd, "../trusted.txt", O_RDONLY, 0,
                 RESOLVE_BENEATH);
    openat2_case("openat2-beneath-inside", (unsigned)datafd, "./ok.txt", O_RDONLY, 0,
                 RESOLVE_BENEATH);
    openat2_case("openat2-in-root-absolute", (unsigned)datafd, "/ok.txt", O_RDONLY, 0,
                 RESOLVE_IN_ROOT);
    openat2_case("openat2-in-root-dotdot", (unsigned)datafd, "../../ok.txt", O_RDONLY, 0,
                 RESOLVE_IN_ROOT);
    openat2_case("openat2-in-root-outside", (unsigned)datafd, "/trusted.txt", O_RDONLY, 0,
                 RESOLVE_IN_ROOT);
    openat2_case("openat2-no-symlinks", (unsigned)datafd, "e-lnk", O_RDONLY, 0,
                 RESOLVE_NO_SYMLINKS);
    openat2_case("openat2-symlink", (unsigned)datafd, "e-lnk", O_RDONLY, 0, 0);
    char self_fd[64];
    snprintf(self_fd, sizeof self_fd, "/proc/self/fd/%d", okfd);
    openat2_case("openat2-own-fd", cwd, self_fd, O_RDONLY, 0, 0);
    openat2_case("openat2-own-fd-no-magiclinks", cwd, self_fd, O_RDONLY, 0,
                 RESOLVE_NO_MAGICLINKS);
    openat2_case("openat2-own-fd-no-symlinks", cwd, self_fd, O_RDONLY, 0, RESOLVE_NO_SYMLINKS);
    openat2_case("openat2-own-fd-beneath", (unsigned)datafd, self_fd, O_RDONLY, 0,
                 RESOLVE_BENEATH);
    openat2_case("openat2-own-fd-in-root", (unsigned)datafd, self_fd, O_RDONLY, 0,
                 RESOLVE_IN_ROOT);
    /* From the enclave's "/", data/ is another mount (a bind): only within data/ do the
     * enclave and the host agree on what crosses a mount. */
    openat2_case("openat2-no-xdev", (unsigned)datafd, "ok.txt", O_RDONLY, 0, RESOLVE_NO_XDEV);
}

static void exec_cases(int datafd, int okfd) {
    unsigned long cwd = AT_FDCWD_64;
    errno = 0;
#define EXEC(name, ...) do { long r = syscall(__VA_ARGS__); report(name, r, errno); } while (0)
    EXEC("execve-null", SYS_execve, NULL, argv_ok, envp_ok);
    EXEC("execve-one", SYS_execve, 1UL, argv_ok, envp_ok);
    EXEC("execve-kernel", SYS_execve, KERNEL_ADDRESS, argv_ok, envp_ok);
    EXEC("execve-5000", SYS_execve, long_path, argv_ok, envp_ok);
    EXEC("execve-unterminated", SYS_execve, unterminated, argv_ok, envp_ok);
    EXEC("execve-empty", SYS_execve, "", argv_ok, envp_ok);
    EXEC("execve-missing", SYS_execve, "missing", argv_ok, envp_ok);
    EXEC("execve-dir", SYS_execve, "data", argv_ok, envp_ok);
    EXEC("execve-argv-one", SYS_execve, "app", 1UL, envp_ok);
    EXEC("execve-argv-kernel", SYS_execve, "app", KERNEL_ADDRESS, envp_ok);
    EXEC("execve-argv-element", SYS_execve, "app", argv_bad, envp_ok);
    EXEC("execve-envp-one", SYS_execve, "app", argv_ok, 1UL);
    EXEC("execve-envp-element", SYS_execve, "app", argv_ok, envp_kernel);
    EXEC("execve-bad-path-and-argv", SYS_execve, KERNEL_ADDRESS, KERNEL_ADDRESS, KERNEL_ADDRESS);

    EXEC("execveat-flag-1", SYS_execveat, cwd, "app", argv_ok, envp_ok, 1UL);
    EXEC("execveat-flag-sign", SYS_execveat, cwd, "app", argv_ok, envp_ok, 0x80000000UL);
    EXEC("execveat-flag-high-ignored", SYS_execveat, cwd, "missing", argv_ok, envp_ok, HIGH);
    EXEC("execveat-flag-empty-and-bad", SYS_execveat, (unsigned)datafd, "", argv_ok, envp_ok,
         AT_EMPTY_PATH | 0x2UL);
    EXEC("execveat-flag-bad-path-first", SYS_execveat, cwd, NULL, argv_ok, envp_ok, 1UL);
    EXEC("execveat-empty-flag-bad", SYS_execveat, cwd, "", argv_ok, envp_ok, 1UL);
    EXEC("execveat-fdcwd-high", SYS_execveat, HIGH | cwd, "missing", argv_ok, envp_ok, 0UL);
    EXEC("execveat-badfd", SYS_execveat, 1000UL, "app", argv_ok, envp_ok, 0UL);
    EXEC("execveat-badfd-absolute", SYS_execveat, 1000UL, "/missing", argv_ok, envp_ok, 0UL);
    EXEC("execveat-empty", SYS_execveat, (unsigned)datafd, "", argv_ok, envp_ok, 0UL);
    EXEC("execveat-empty-path-badfd", SYS_execveat, 1000UL, "", argv_ok, envp_ok, AT_EMPTY_PATH);
    EXEC("execveat-empty-path-dir", SYS_execveat, (unsigned)datafd, "", argv_ok, envp_ok,
         AT_EMPTY_PATH);
    EXEC("execveat-empty-path-fdcwd", SYS_execveat, cwd, "", argv_ok, envp_ok, AT_EMPTY_PATH);
    EXEC("execveat-empty-path-file", SYS_execveat, (unsigned)okfd, "", argv_ok, envp_ok,
         AT_EMPTY_PATH);
    EXEC("execveat-null-empty-path", SYS_execveat, (unsigned)datafd, NULL, argv_ok, envp_ok,
         AT_EMPTY_PATH);
    EXEC("execveat-kernel", SYS_execveat, cwd, KERNEL_ADDRESS, argv_ok, envp_ok, 0UL);
    EXEC("execveat-5000", SYS_execveat, cwd, long_path, argv_ok, envp_ok, 0UL);
    EXEC("execveat-nofollow", SYS_execveat, cwd, "data/e-lnk", argv_ok, envp_ok,
         HIGH | AT_SYMLINK_NOFOLLOW);
    EXEC("execveat-follow-argv-bad", SYS_execveat, cwd, "data/e-lnk", KERNEL_ADDRESS, envp_ok,
         0UL);
    EXEC("execveat-dotdot-argv-bad", SYS_execveat, (unsigned)datafd, "../app", argv_bad, envp_ok,
         0UL);
    EXEC("execveat-argv-bad", SYS_execveat, cwd, "app", 1UL, envp_ok, 0UL);
    /* Linux 6.14+: only checks (0, nothing executed); older kernels: EINVAL. */
    EXEC("execveat-check", SYS_execveat, cwd, "app", argv_ok, envp_ok, AT_EXECVE_CHECK_FLAG);
    EXEC("execveat-check-not-executable", SYS_execveat, cwd, "data/ok.txt", argv_ok, envp_ok,
         AT_EXECVE_CHECK_FLAG);

    EXEC("clone-thread-no-sighand", SYS_clone, CLONE_THREAD, 0UL, 0UL, 0UL, 0UL);
    EXEC("clone-sighand-no-vm", SYS_clone, CLONE_THREAD | CLONE_SIGHAND, 0UL, 0UL, 0UL, 0UL);
    EXEC("clone-high-thread", SYS_clone, 0xffffffff00000000UL | CLONE_THREAD, 0UL, 0UL, 0UL, 0UL);

    long big = 2L << 20;
#define MMAP(name, ...) do { \
        void *p = (void *)syscall(SYS_mmap, __VA_ARGS__); \
        report(name, p == MAP_FAILED ? -1 : 0, errno); \
        if (p != MAP_FAILED) munmap(p, big); \
    } while (0)
    MMAP("mmap-no-type", 0UL, big, PROT_READ, MAP_ANONYMOUS, -1L, 0UL);
    MMAP("mmap-unaligned-offset", 0UL, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1L, 1UL);
    MMAP("mmap-huge", 0UL, 1UL << 62, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1L, 0UL);
    MMAP("mmap-all-ones", 0UL, ~0UL, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1L, 0UL);
    MMAP("mmap-high-flags", 0UL, big, PROT_READ, (1UL << 40) | MAP_PRIVATE | MAP_ANONYMOUS, -1L,
         0UL);
    MMAP("mmap-ok", 0UL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1L, 0UL);
}

static int cases(void) {
    unlink_created();
    if (symlink("../app", "data/e-lnk") != 0)
        return 2;
    int datafd = open("data", O_RDONLY | O_DIRECTORY);
    int okfd = open("data/ok.txt", O_RDONLY);
    if (datafd < 0 || okfd < 0)
        return 2;
    open_cases(datafd, okfd);
    openat2_cases(datafd, okfd);
    exec_cases(datafd, okfd);
    unlink_created();
    return 0;
}

/* xorshift64*: the same sequence natively and in the enclave. */
static uint64_t state;

static uint64_t rnd(void) {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ULL;
}

static uint64_t any_value(void) {
    switch (rnd() % 6) {
    case 0: return rnd();
    case 1: return rnd() & 0xffffffff;
    case 2: return rnd() % 64;
    case 3: return 1UL << (rnd() % 64);
    case 4: return KERNEL_ADDRESS | (rnd() & 0xffff);
    default: return rnd() | 0xffffffff00000000UL;
    }
}

static uint64_t open_flags(void) {
    if (rnd() % 2)
        return any_value();
    uint64_t flags = rnd() % 4;
    static const uint64_t bits[] = {O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC, O_APPEND, O_NONBLOCK,
                                    O_DSYNC, O_SYNC, O_ASYNC, O_NOFOLLOW, O_DIRECTORY, O_NOATIME,
                                    O_CLOEXEC, O_PATH, O_TMPFILE, KERNEL_O_LARGEFILE, 04, 1UL << 30};
    for (int i = rnd() % 4; i > 0; i--)
        flags |= bits[rnd() % (sizeof bits / sizeof *bits)];
    if (rnd() % 4 == 0)
        flags |= rnd() & 0xffffffff00000000UL;
    return flags;
}

static uint64_t bad_pointer(void) {
    static const uint64_t pointers[] = {0, 1, KERNEL_ADDRESS, ~0UL, 0x7ffffffff000UL};
    if (rnd() % 3 == 0)
        return rnd();
    return pointers[rnd() % (sizeof pointers / sizeof *pointers)];
}

/* Paths that are the same file natively and in the enclave, and never executable. */
static uint64_t fuzz_path(int for_exec) {
    static const char *paths[] = {"data/ok.txt", "data", "/dev/null", "data/no/x", "data/ok.txt/x",
                                  "", "data/fz", "data/fz2", "data/../data/fz"};
    uint64_t kind = rnd() % 14;
    if (kind < 9 && !(for_exec && kind >= 6))
        return (uint64_t)(uintptr_t)paths[kind];
    switch (kind) {
    case 9: return (uint64_t)(uintptr_t)long_path;
    case 10: return (uint64_t)(uintptr_t)path4096;
    case 11: return (uint64_t)(uintptr_t)unterminated;
    default: return bad_pointer();
    }
}

static uint64_t fuzz_dirfd(int datafd) {
    switch (rnd() % 5) {
    case 0: return AT_FDCWD_64 | (rnd() & 0xffffffff00000000UL);
    case 1: return (unsigned)datafd | (rnd() & 0xffffffff00000000UL);
    case 2: return any_value();
    case 3: return 1000;
    default: return AT_FDCWD_64;
    }
}

static uint64_t fuzz_argv(void) {
    switch (rnd() % 4) {
    case 0: return (uint64_t)(uintptr_t)argv_ok;
    case 1: return (uint64_t)(uintptr_t)argv_bad;
    case 2: return (uint64_t)(uintptr_t)envp_kernel;
    default: return bad_pointer();
    }
}

static int fuzz(long count, uint64_t seed) {
    state = seed | 1;
    unlink_created();
    int datafd = open("data", O_RDONLY | O_DIRECTORY);
    if (datafd < 0)
        return 2;
    struct how *how = (struct how *)howbuf;
    char name[64];
    for (long i = 0; i < count; i++) {
        uint64_t kind = rnd() % 8;
        long ret;
        /* A created file always has its owner's rw bits: the enclave's root and the host's
         * may differ in how much DAC they bypass, not in what the open validates. */
        uint64_t mode = any_value() | 0600;
        switch (kind) {
        case 0:
            snprintf(name, sizeof name, "%ld open", i);
            fdcall(name, syscall(SYS_open, fuzz_path(0), open_flags(), mode));
            break;
        case 1:
            snprintf(name, sizeof name, "%ld openat", i);
            fdcall(name, syscall(SYS_openat, fuzz_dirfd(datafd), fuzz_path(0), open_flags(),
                                 mode));
            break;
        case 2: {
            memset(howbuf, 0, 64);
            how->flags = open_flags();
            how->mode = rnd() % 2 ? 0 : mode;
            how->resolve = rnd() % 2 ? 0 : rnd() % 2 ? rnd() % 64 : any_value();
            if (rnd() % 2) { /* one openat2 could accept: known bits, a mode only to create */
                how->flags &= VALID_OPEN_FLAGS;
                how->mode = how->flags & (O_CREAT | O_TMPFILE_BIT) ? mode & 07777 : 0;
                how->resolve &= 0x3f;
                if (how->resolve & RESOLVE_IN_ROOT)
                    how->resolve &= ~RESOLVE_BENEATH;
            }
            if (rnd() % 8 == 0)
                howbuf[24 + rnd() % 40] = 1;
            static const uint64_t sizes[] = {24, 24, 24, 32, 64, 0, 23, 4096, 4097};
            uint64_t size = rnd() % 8 ? sizes[rnd() % 9] : any_value();
            uint64_t pointer = rnd() % 6 ? (uint64_t)(uintptr_t)how : bad_pointer();
            uint64_t dirfd = fuzz_dirfd(datafd);
            /* Where the enclave and the host differ: the start directory ("/" inside, the
             * enclave's directory outside) as a root, and its mounts (data/ is a bind); and
             * what the dentry cache holds (RESOLVE_CACHED: EAGAIN when it misses). */
            if ((uint32_t)dirfd == (uint32_t)AT_FDCWD)
                how->resolve &= ~(RESOLVE_IN_ROOT | RESOLVE_NO_XDEV);
            how->resolve &= ~RESOLVE_CACHED;
            snprintf(name, sizeof name, "%ld openat2", i);
            fdcall(name, syscall(SYS_openat2, dirfd, fuzz_path(0), pointer, size));
            break;
        }
        case 3:
            snprintf(name, sizeof name, "%ld creat", i);
            fdcall(name, syscall(SYS_creat, fuzz_path(0), mode));
            break;
        case 4:
            snprintf(name, sizeof name, "%ld execve", i);
            ret = syscall(SYS_execve, fuzz_path(1), fuzz_argv(), fuzz_argv());
            report(name, ret, errno);
            break;
        case 5:
            snprintf(name, sizeof name, "%ld execveat", i);
            ret = syscall(SYS_execveat, fuzz_dirfd(datafd), fuzz_path(1), fuzz_argv(),
                          fuzz_argv(), rnd() % 2 ? any_value() : rnd() % 0x2000);
            report(name, ret, errno);
            break;
        case 6:
            /* Never a valid thread clone: CLONE_THREAD without CLONE_SIGHAND, or CLONE_SIGHAND
             * without CLONE_VM. No namespace flags (refused before the kernel sees them). */
            snprintf(name, sizeof name, "%ld clone", i);
            ret = syscall(SYS_clone, (rnd() & ~(NAMESPACE_FLAGS | CLONE_VM)) | CLONE_THREAD,
                          any_value(), any_value(), any_value(), any_value());
            report(name, ret, errno);
            break;
        default: {
            /* Anonymous, at least 1 MiB (trapped); never MAP_FIXED, MAP_FIXED_NOREPLACE,
             * MAP_POPULATE, MAP_LOCKED or MAP_HUGETLB; lengths the enclave and the host agree
             * on (up to 64 MiB, or beyond any address space). */
            uint64_t length = rnd() % 4 ? (1UL << 20) + rnd() % (63UL << 20)
                                        : (1UL << 57) + rnd() % (1UL << 62);
            uint64_t flags = (rnd() & (MAP_SHARED | MAP_PRIVATE | MAP_NORESERVE | MAP_GROWSDOWN |
                                       0xffff000000000000UL)) | MAP_ANONYMOUS;
            uint64_t offset = rnd() % 4 ? 0 : rnd() % 3 ? (rnd() & ~0xfffUL) : rnd();
            void *p = (void *)syscall(SYS_mmap, 0UL, length, rnd() % 8, flags, any_value(),
                                      offset);
            snprintf(name, sizeof name, "%ld mmap", i);
            report(name, p == MAP_FAILED ? -1 : 0, errno);
            if (p != MAP_FAILED)
                munmap(p, length);
        }
        }
    }
    unlink_created();
    /* The supervisor survived and lost no request: an ordinary open still works. */
    char buf[64] = {0};
    int fd = open("trusted.txt", O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf - 1) < 0) {
        printf("after fuzz: open failed: %s\n", strerrorname_np(errno));
        return 1;
    }
    printf("after %ld calls: %s", count, buf);
    return 0;
}

static int mocked(long count, uint64_t seed) {
    state = seed | 1;
    long hits = 0;
    for (long i = 0; i < count; i++) {
        uint64_t a = any_value(), b = any_value(), c = any_value();
        if (syscall(SYS_getppid, a, b, c, any_value(), any_value(), any_value()) == 42)
            hits++;
    }
    printf("mocked: %ld of %ld\n", hits, count);
    return 0;
}

static int subprocess(void) {
    errno = 0;
    EXEC("fork", SYS_fork);
    EXEC("vfork", SYS_vfork);
    EXEC("clone-process", SYS_clone, HIGH | SIGCHLD, 0UL, 0UL, 0UL, 0UL);
    EXEC("clone-process-sighand-no-vm", SYS_clone, CLONE_SIGHAND | SIGCHLD, 0UL, 0UL, 0UL, 0UL);
    return 0;
}

static int setid(void) {
    /* Every kind of trapped create, with S_ISUID and S_ISGID asked for. */
    struct how how = {O_CREAT | O_WRONLY, 06777, 0};
    fdcall("open", syscall(SYS_open, "data/setid-open", O_CREAT | O_WRONLY, 04777));
    fdcall("openat", syscall(SYS_openat, AT_FDCWD_64, "data/setid-openat", O_CREAT | O_RDWR,
                             02777));
    fdcall("openat2", sys_openat2(AT_FDCWD_64, "data/setid-openat2", &how, sizeof how));
    fdcall("creat", syscall(SYS_creat, "data/setid-creat", 06777));
    int fd = (int)syscall(SYS_open, "data", O_TMPFILE | O_RDWR, 06777);
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    report("tmpfile", fd < 0 ? -1 : linkat(AT_FDCWD, self, AT_FDCWD, "data/setid-tmpfile",
                                           AT_SYMLINK_FOLLOW), errno);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    setup();
    if (argc >= 2 && strcmp(argv[1], "execed") == 0) {
        printf("EXECED\n");
        return 3;
    }
    if (argc >= 2 && strcmp(argv[1], "cases") == 0)
        return cases();
    if (argc >= 4 && strcmp(argv[1], "fuzz") == 0)
        return fuzz(strtol(argv[2], NULL, 0), strtoull(argv[3], NULL, 0));
    if (argc >= 4 && strcmp(argv[1], "mocked") == 0)
        return mocked(strtol(argv[2], NULL, 0), strtoull(argv[3], NULL, 0));
    if (argc >= 2 && strcmp(argv[1], "subprocess") == 0)
        return subprocess();
    if (argc >= 2 && strcmp(argv[1], "setid") == 0)
        return setid();
    return 2;
}
