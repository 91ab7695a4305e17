/* dlopen LIBRARY and print what its answer() returns, or dlerror(). */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    void *library = dlopen(argv[1], RTLD_NOW);
    if (!library) {
        printf("dlopen failed: %s\n", dlerror());
        return 1;
    }
    int (*answer)(void) = (int (*)(void))dlsym(library, "answer");
    printf("answer %d\n", answer ? answer() : -1);
    return 0;
}
