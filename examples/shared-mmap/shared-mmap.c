/* shared-mmap: two processes (on two machines) share one mapped file through Wrapfs layers.
 *
 * Each machine mounts its client of the shared file system (GlusterFS, NFS, sshfs ...) and an
 * identity layer on top, which gives it mmap. The layers keep cached pages until told:
 *   writer: flock(LOCK_EX), write into the mapping, msync(MS_SYNC), unlock;
 *   reader: flock(LOCK_SH), wrapfs_refresh() the range, read the mapping, unlock.
 * The lock orders the two; msync pushes the writer's pages down; refresh makes the reader's
 * next touch of those pages read them again. (flock must reach both machines: on one machine
 * a lock file on a local disk does; across machines use the shared file system's own locks.)
 *
 * Build: cc -O2 -I include examples/shared-mmap/shared-mmap.c -o shared-mmap
 * Use:   shared-mmap write FILE LOCKFILE OFFSET TEXT   (FILE must be at least OFFSET+len bytes)
 *        shared-mmap read  FILE LOCKFILE OFFSET LENGTH (prints the bytes)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "wrapfs.h"

static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
    if (argc != 6 || (strcmp(argv[1], "write") && strcmp(argv[1], "read"))) {
        fprintf(stderr, "usage: %s write FILE LOCKFILE OFFSET TEXT | read FILE LOCKFILE OFFSET LENGTH\n", argv[0]);
        return 64;
    }
    int writing = strcmp(argv[1], "write") == 0;
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) die("open");
    int lock = open(argv[3], O_RDWR | O_CREAT, 0644);
    if (lock < 0) die("open lock file");
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    char *map = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) die("mmap");
    long offset = atol(argv[4]);
    if (writing) {
        size_t n = strlen(argv[5]);
        if (offset < 0 || offset + (long)n > st.st_size) { fprintf(stderr, "range past the end of the file\n"); return 1; }
        if (flock(lock, LOCK_EX) != 0) die("flock");
        memcpy(map + offset, argv[5], n);
        if (msync(map, st.st_size, MS_SYNC) != 0) die("msync");
        flock(lock, LOCK_UN);
    } else {
        long n = atol(argv[5]);
        if (offset < 0 || n < 0 || offset + n > st.st_size) { fprintf(stderr, "range past the end of the file\n"); return 1; }
        if (flock(lock, LOCK_SH) != 0) die("flock");
        if (wrapfs_refresh(fd, (uint64_t)offset, (uint64_t)n) != 0) die("wrapfs_refresh");
        fwrite(map + offset, 1, (size_t)n, stdout);
        flock(lock, LOCK_UN);
    }
    munmap(map, st.st_size);
    return 0;
}
