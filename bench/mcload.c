/* Load generator for memcached's text protocol (bench/run): C, so that the client is not
 * what limits the measurement (a Python client would be).
 *
 *     mcload HOST PORT CONNECTIONS SECONDS get|set
 *
 * One thread per connection, one request in flight per connection (like redis-benchmark
 * -P 1). `set` stores a 32-byte value under one of 1000 keys per connection; `get` reads a
 * key stored before the clock starts. Every answer is checked. Prints
 * "requests/s: R errors: E" and exits 1 when any request failed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define VALUE "0123456789abcdef0123456789abcdef"

static const char *host;
static int port, do_set;
static double seconds;
static atomic_long total_requests, total_errors;
static pthread_barrier_t ready;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Send `request`, read until the answer ends with `end`; 0 when it equals `expected`. */
static int roundtrip(int fd, const char *request, size_t length, const char *expected) {
    char answer[256];
    size_t got = 0, want = strlen(expected);
    if (write(fd, request, length) != (ssize_t)length)
        return -1;
    while (got < want) {
        ssize_t n = read(fd, answer + got, sizeof answer - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return got == want && memcmp(answer, expected, want) == 0 ? 0 : -1;
}

static void *connection(void *arg) {
    long id = (long)arg, requests = 0, errors = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    char request[128], expected[128];
    inet_pton(AF_INET, host, &addr.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("mcload: connect");
        atomic_fetch_add(&total_errors, 1);
        pthread_barrier_wait(&ready);
        return NULL;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int n = snprintf(request, sizeof request, "set key:%ld:0 0 0 32\r\n" VALUE "\r\n", id);
    if (roundtrip(fd, request, (size_t)n, "STORED\r\n") != 0)
        errors++;
    snprintf(expected, sizeof expected, "VALUE key:%ld:0 0 32\r\n" VALUE "\r\nEND\r\n", id);
    pthread_barrier_wait(&ready);
    double end = now() + seconds;
    while ((requests & 63) || now() < end) {
        if (do_set) {
            n = snprintf(request, sizeof request, "set key:%ld:%ld 0 0 32\r\n" VALUE "\r\n", id,
                         requests % 1000);
            errors += roundtrip(fd, request, (size_t)n, "STORED\r\n") != 0;
        } else {
            n = snprintf(request, sizeof request, "get key:%ld:0\r\n", id);
            errors += roundtrip(fd, request, (size_t)n, expected) != 0;
        }
        requests++;
    }
    close(fd);
    atomic_fetch_add(&total_requests, requests);
    atomic_fetch_add(&total_errors, errors);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6 || (strcmp(argv[5], "get") && strcmp(argv[5], "set"))) {
        fprintf(stderr, "usage: mcload HOST PORT CONNECTIONS SECONDS get|set\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* a server that goes away is an error, not the client's end */
    host = argv[1];
    port = atoi(argv[2]);
    long connections = atol(argv[3]);
    seconds = atof(argv[4]);
    do_set = strcmp(argv[5], "set") == 0;
    pthread_t *threads = calloc((size_t)connections, sizeof *threads);
    /* every connection made and its key stored before the clock starts */
    pthread_barrier_init(&ready, NULL, (unsigned)connections + 1);
    for (long i = 0; i < connections; i++)
        pthread_create(&threads[i], NULL, connection, (void *)i);
    pthread_barrier_wait(&ready);
    double start = now();
    for (long i = 0; i < connections; i++)
        pthread_join(threads[i], NULL);
    double elapsed = now() - start;
    printf("requests/s: %.1f errors: %ld\n", atomic_load(&total_requests) / elapsed,
           atomic_load(&total_errors));
    return atomic_load(&total_errors) ? 1 : 0;
}
