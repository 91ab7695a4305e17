/* Open and read every file of a directory once (the many-trusted-files workload of bench/run):
 * prints the count and the bytes read, and the microseconds per file. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
        return 2;
    }
    int dir = open(argv[1], O_RDONLY | O_DIRECTORY);
    DIR *listing = dir < 0 ? NULL : fdopendir(dir);
    if (listing == NULL) {
        perror(argv[1]);
        return 1;
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long files = 0, bytes = 0;
    char buffer[65536];
    for (struct dirent *entry; (entry = readdir(listing)) != NULL;) {
        if (entry->d_name[0] == '.')
            continue;
        int fd = openat(dir, entry->d_name, O_RDONLY);
        if (fd < 0) {
            perror(entry->d_name);
            return 1;
        }
        for (ssize_t got; (got = read(fd, buffer, sizeof buffer)) > 0;)
            bytes += got;
        close(fd);
        files++;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double us = (end.tv_sec - start.tv_sec) * 1e6 + (end.tv_nsec - start.tv_nsec) / 1e3;
    printf("%ld files, %ld bytes, %.2f us per file\n", files, bytes, us / (files ? files : 1));
    return 0;
}
