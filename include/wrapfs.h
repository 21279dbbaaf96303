/* wrapfs.h: what applications call on files of a Wrapfs mount (C, header only).
 *
 * Reverse msync. Over a lower file shared with other machines (a distributed file system),
 * the layer keeps file pages in the kernel's page cache until told otherwise. A process that
 * learns (by its own protocol: a lock, a message) that another machine wrote and msynced a
 * range calls wrapfs_refresh() on that range: the cached pages of the range are dropped
 * (dirty ones are written back first), so the next read or touch of a mapped page reads the
 * lower file again. Other ranges keep their cached pages.
 *
 *     int fd = open("/mnt/shared/data", O_RDWR);
 *     flock(fd, LOCK_SH);                       // the writer msynced before it unlocked
 *     if (wrapfs_refresh(fd, offset, length) != 0) perror("refresh");
 *     ... read the range, or its mapped pages ...
 *
 * Returns 0, or -1 with errno: ENOTTY when fd is not a file of a Wrapfs mount, EBADF, EINVAL.
 */
#ifndef WRAPFS_H
#define WRAPFS_H

#include <stdint.h>
#include <sys/ioctl.h>

/* The ioctl's argument: a byte range of the file; length 0 means "to the end of the file". */
struct wrapfs_refresh_range {
    uint64_t offset;
    uint64_t length;
};

#define WRAPFS_IOC_REFRESH _IOW('W', 0x52, struct wrapfs_refresh_range)

static inline int wrapfs_refresh(int fd, uint64_t offset, uint64_t length) {
    struct wrapfs_refresh_range range = { offset, length };
    return ioctl(fd, WRAPFS_IOC_REFRESH, &range);
}

#endif
