// C glue for libfuse3's low-level API: version pin and wrappers for what Swift cannot import.
#ifndef WRAPFS_CFUSE_SHIM_H
#define WRAPFS_CFUSE_SHIM_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <sys/ioctl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <dirent.h>
#include <syslog.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <stdint.h>
#include <time.h>
#include <sys/vfs.h>
#include <linux/stat.h>
#include <string.h>
#include <spawn.h>
#include <sys/sysmacros.h>
#include "../../include/wrapfs.h"  // the refresh ioctl applications call
#include "../../include/wrapfs_codec.h"  // the C ABI of codec plugins
#include <dlfcn.h>
#include "ring.h"  // FUSE over io_uring

// GNU flags that <fcntl.h> hides without _GNU_SOURCE (which would clash with Swift's Glibc module).
#ifdef O_PATH
static const int wrapfs_O_PATH = O_PATH;
#else
static const int wrapfs_O_PATH = 010000000;
#endif
#ifdef O_DIRECT
static const int wrapfs_O_DIRECT = O_DIRECT;
#elif defined(__aarch64__) || defined(__arm__)
static const int wrapfs_O_DIRECT = 0200000;
#elif defined(__powerpc__)
static const int wrapfs_O_DIRECT = 0400000;
#else
static const int wrapfs_O_DIRECT = 040000;
#endif
#ifdef O_NOATIME
static const int wrapfs_O_NOATIME = O_NOATIME;
#else
static const int wrapfs_O_NOATIME = 01000000;  // the same on x86, arm and the generic ABI
#endif
#ifdef F_SETPIPE_SZ
static const int wrapfs_F_SETPIPE_SZ = F_SETPIPE_SZ;
#else
static const int wrapfs_F_SETPIPE_SZ = 1031;  // F_LINUX_SPECIFIC_BASE + 7, the same on every architecture
#endif
#ifdef AT_EMPTY_PATH
static const int wrapfs_AT_EMPTY_PATH = AT_EMPTY_PATH;
#else
static const int wrapfs_AT_EMPTY_PATH = 0x1000;
#endif

// fuse_session_loop_mt is a macro over a versioned symbol.
static inline int wrapfs_session_loop_mt(struct fuse_session *se, unsigned max_threads, int clone_fd) {
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (!cfg) return -1;
    fuse_loop_cfg_set_clone_fd(cfg, clone_fd);
    if (max_threads > 0) fuse_loop_cfg_set_max_threads(cfg, max_threads);
    fuse_loop_cfg_set_idle_threads(cfg, max_threads > 0 && max_threads < 10 ? max_threads : 10);
    int rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    return rc;
}

// renameat2 with its flags, whatever libc exports.
static inline int wrapfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

// open(2) and openat(2) are variadic in C.
static inline int wrapfs_openat(int dirfd, const char *path, int flags, mode_t mode) {
    return openat(dirfd, path, flags, mode);
}
static inline int wrapfs_open(const char *path, int flags, mode_t mode) {
    return open(path, flags, mode);
}

// Extended attributes, by path (the layer passes /proc/self/fd/N).
static inline ssize_t wrapfs_getxattr(const char *path, const char *name, void *value, size_t size) { return getxattr(path, name, value, size); }
static inline ssize_t wrapfs_listxattr(const char *path, char *list, size_t size) { return listxattr(path, list, size); }
static inline int wrapfs_setxattr(const char *path, const char *name, const void *value, size_t size, int flags) { return setxattr(path, name, value, size, flags); }
static inline int wrapfs_removexattr(const char *path, const char *name) { return removexattr(path, name); }

// utimensat's special values are macros with casts.
static const long wrapfs_utime_now = UTIME_NOW;
static const long wrapfs_utime_omit = UTIME_OMIT;

// fallocate(2) is GNU-only in <fcntl.h>.
int fallocate(int fd, int mode, off_t offset, off_t len);
static inline int wrapfs_fallocate(int fd, int mode, off_t offset, off_t len) { return fallocate(fd, mode, offset, len); }

// A WRITE request's data as libfuse hands it to write_buf: in memory, or still in the pipe it was
// spliced into from /dev/fuse (FUSE_CAP_SPLICE_READ).
static inline const void *wrapfs_buf_mem(const struct fuse_bufvec *b) {
    return b->count == 1 && !(b->buf[0].flags & FUSE_BUF_IS_FD) ? b->buf[0].mem : NULL;
}
// Moves what is left of the request's data to `fd` at `offset` (splice from the pipe when it is
// in one): bytes moved, or -errno when none could be.
static inline ssize_t wrapfs_buf_to_fd(struct fuse_bufvec *src, int fd, off_t offset) {
    struct fuse_bufvec dst = FUSE_BUFVEC_INIT(fuse_buf_size(src));
    dst.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    dst.buf[0].fd = fd;
    dst.buf[0].pos = offset;
    return fuse_buf_copy(&dst, src, (enum fuse_buf_copy_flags)0);
}
// Copies the request's data into memory (for codecs that must see the bytes).
static inline ssize_t wrapfs_buf_to_mem(struct fuse_bufvec *src, void *mem, size_t size) {
    struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);
    dst.buf[0].mem = mem;
    return fuse_buf_copy(&dst, src, (enum fuse_buf_copy_flags)0);
}

// getdents64(2), to read directories in pieces of a chosen size.
static inline long wrapfs_getdents64(int fd, void *buf, size_t n) { return syscall(SYS_getdents64, fd, buf, n); }

// A daemon must not hold its starter's pipes open: close every inherited descriptor above stderr.
static inline void wrapfs_close_inherited(void) {
    long max = sysconf(_SC_OPEN_MAX);
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return;
    for (long fd = 3; fd < max; fd++) close((int)fd);
}

// Whether two O_PATH descriptors with the same inode number hold the same live file, asked of
// the file system itself (not the attribute cache): 1 if size, times and link count agree.
static inline int wrapfs_same_live_file(int a, int b) {
    struct statx x, y;
    int flags = 0x1000 /* AT_EMPTY_PATH */ | AT_SYMLINK_NOFOLLOW | 0x2000 /* AT_STATX_FORCE_SYNC */;
    unsigned mask = STATX_NLINK | STATX_SIZE | STATX_MTIME | STATX_CTIME | STATX_INO;
    if (syscall(SYS_statx, a, "", flags, mask, &x) != 0) return 0;
    if (syscall(SYS_statx, b, "", flags, mask, &y) != 0) return 0;
    return x.stx_nlink > 0 && x.stx_ino == y.stx_ino && x.stx_nlink == y.stx_nlink && x.stx_size == y.stx_size
        && x.stx_mtime.tv_sec == y.stx_mtime.tv_sec && x.stx_mtime.tv_nsec == y.stx_mtime.tv_nsec
        && x.stx_ctime.tv_sec == y.stx_ctime.tv_sec && x.stx_ctime.tv_nsec == y.stx_ctime.tv_nsec;
}

// fstat of a descriptor asked of the file system itself, past the kernel's attribute cache
// (statx AT_STATX_FORCE_SYNC): on a lower FUSE file system, another name of a hard-linked file
// may be a separate kernel inode whose cached attributes lag behind.
static inline int wrapfs_fstat_fresh(int fd, struct stat *st) {
    struct statx x;
    int flags = 0x1000 /* AT_EMPTY_PATH */ | AT_SYMLINK_NOFOLLOW | 0x2000 /* AT_STATX_FORCE_SYNC */;
    if (syscall(SYS_statx, fd, "", flags, STATX_BASIC_STATS, &x) != 0) return -1;
    memset(st, 0, sizeof *st);
    st->st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
    st->st_ino = x.stx_ino;
    st->st_mode = x.stx_mode;
    st->st_nlink = x.stx_nlink;
    st->st_uid = x.stx_uid;
    st->st_gid = x.stx_gid;
    st->st_rdev = makedev(x.stx_rdev_major, x.stx_rdev_minor);
    st->st_size = (off_t)x.stx_size;
    st->st_blksize = x.stx_blksize;
    st->st_blocks = (blkcnt_t)x.stx_blocks;
    st->st_atim.tv_sec = x.stx_atime.tv_sec; st->st_atim.tv_nsec = x.stx_atime.tv_nsec;
    st->st_mtim.tv_sec = x.stx_mtime.tv_sec; st->st_mtim.tv_nsec = x.stx_mtime.tv_nsec;
    st->st_ctim.tv_sec = x.stx_ctime.tv_sec; st->st_ctim.tv_nsec = x.stx_ctime.tv_nsec;
    return 0;
}

// FUSE_STATX's request argument and reply (FUSE 7.39, Linux 6.6; libfuse 3.14's headers predate
// them), laid out as the kernel's fuse_statx_in and fuse_statx_out.
struct wrapfs_statx_in { uint32_t getattr_flags, reserved; uint64_t fh; uint32_t sx_flags, sx_mask; };
struct wrapfs_out_header { uint32_t len; int32_t error; uint64_t unique; };
struct wrapfs_sx_time { int64_t tv_sec; uint32_t tv_nsec; int32_t reserved; };
struct wrapfs_statx_out {
    uint64_t attr_valid; uint32_t attr_valid_nsec, flags; uint64_t spare[2];
    struct {
        uint32_t mask, blksize; uint64_t attributes; uint32_t nlink, uid, gid; uint16_t mode, spare0;
        uint64_t ino, size, blocks, attributes_mask;
        struct wrapfs_sx_time atime, btime, ctime, mtime;
        uint32_t rdev_major, rdev_minor, dev_major, dev_minor; uint64_t spare2[14];
    } stat;
};
_Static_assert(sizeof(struct wrapfs_statx_in) == 24, "fuse_statx_in");
_Static_assert(sizeof(struct wrapfs_statx_out) == 288, "fuse_statx_out");

// statx(2) asking for the birth time: the mask the file system answered (or -1 and errno), and
// the birth time where the mask has STATX_BTIME.
static inline int wrapfs_statx_btime(int dirfd, const char *path, int flags, int64_t *sec, uint32_t *nsec) {
    struct statx x;
    if (syscall(SYS_statx, dirfd, path, flags, STATX_BASIC_STATS | STATX_BTIME, &x) != 0) return -1;
    *sec = x.stx_btime.tv_sec;
    *nsec = x.stx_btime.tv_nsec;
    return (int)x.stx_mask;
}

// Fills a FUSE_STATX reply from the attributes the layer shows (`st`) and the birth time of the
// lower file `fd` (an O_PATH descriptor), where its file system records one.
static inline void wrapfs_statx_out_fill(struct wrapfs_statx_out *o, const struct stat *st, double timeout, int fd) {
    memset(o, 0, sizeof *o);
    o->attr_valid = (uint64_t)timeout;
    o->attr_valid_nsec = (uint32_t)((timeout - (double)(uint64_t)timeout) * 1e9);
    o->stat.mask = STATX_BASIC_STATS;
    o->stat.blksize = (uint32_t)st->st_blksize;
    o->stat.nlink = (uint32_t)st->st_nlink;
    o->stat.uid = st->st_uid;
    o->stat.gid = st->st_gid;
    o->stat.mode = (uint16_t)st->st_mode;
    o->stat.ino = st->st_ino;
    o->stat.size = (uint64_t)st->st_size;
    o->stat.blocks = (uint64_t)st->st_blocks;
    o->stat.atime.tv_sec = st->st_atim.tv_sec; o->stat.atime.tv_nsec = (uint32_t)st->st_atim.tv_nsec;
    o->stat.mtime.tv_sec = st->st_mtim.tv_sec; o->stat.mtime.tv_nsec = (uint32_t)st->st_mtim.tv_nsec;
    o->stat.ctime.tv_sec = st->st_ctim.tv_sec; o->stat.ctime.tv_nsec = (uint32_t)st->st_ctim.tv_nsec;
    o->stat.rdev_major = major(st->st_rdev); o->stat.rdev_minor = minor(st->st_rdev);
    o->stat.dev_major = major(st->st_dev); o->stat.dev_minor = minor(st->st_dev);
    struct statx x;
    if (syscall(SYS_statx, fd, "", 0x1000 /* AT_EMPTY_PATH */ | AT_SYMLINK_NOFOLLOW, STATX_BTIME, &x) == 0
        && (x.stx_mask & STATX_BTIME)) {
        o->stat.mask |= STATX_BTIME;
        o->stat.btime.tv_sec = x.stx_btime.tv_sec;
        o->stat.btime.tv_nsec = x.stx_btime.tv_nsec;
    }
}

// The file-system type of a descriptor's file system (statfs f_type).
static inline long wrapfs_fs_type(int fd) {
    struct statfs sf;
    return fstatfs(fd, &sf) == 0 ? (long)sf.f_type : 0;
}

// Every known inode holds a descriptor: raise the open-file limit as far as allowed
// (as root, to the system's nr_open), or to `cap` when it is positive. Returns the new soft limit.
static inline long wrapfs_raise_nofile(long cap) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    long nr = 0;
    if (f) { if (fscanf(f, "%ld", &nr) != 1) nr = 0; fclose(f); }
    if (geteuid() == 0 && nr > 0 && (rlim_t)nr > rl.rlim_max) rl.rlim_max = (rlim_t)nr;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) { getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (cap > 0 && (rlim_t)cap < rl.rlim_cur) { rl.rlim_cur = (rlim_t)cap; setrlimit(RLIMIT_NOFILE, &rl); }
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

// The soft open-file limit.
static inline long wrapfs_nofile(void) {
    struct rlimit rl;
    return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : 1024;
}

static inline int wrapfs_errno(void) { return errno; }

// No core dumps and no ptrace or /proc/PID/mem by other processes of the same user: the daemon
// holds a master key. (prctl(2) is variadic in C.)
static inline int wrapfs_forbid_dumps(void) { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }
// Names the calling thread (up to 15 bytes; ps -L and /proc show it).
static inline void wrapfs_name_thread(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

// fcntl(2) is variadic in C.
static inline int wrapfs_fcntl_lock(int fd, int cmd, struct flock *lock) { return fcntl(fd, cmd, lock); }

// glibc 2.34's closefrom action for posix_spawn, which the Glibc module does not show Swift.
static inline int wrapfs_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

// syslog(3) is variadic in C.
static inline void wrapfs_syslog(int priority, const char *message) { syslog(priority, "%s", message); }

// The fuse_file_info bitfields, read and written from Swift without relying on bitfield import.
static inline void wrapfs_fi_set_keep_cache(struct fuse_file_info *fi, int v) { fi->keep_cache = v; }
static inline void wrapfs_fi_set_direct_io(struct fuse_file_info *fi, int v) { fi->direct_io = v; }
static inline void wrapfs_fi_set_noflush(struct fuse_file_info *fi, int v) { fi->noflush = v; }

static inline int wrapfs_fi_writepage(const struct fuse_file_info *fi) { return fi->writepage; }

static inline const char *wrapfs_dirent_name(struct dirent *d) { return d->d_name; }

static inline dev_t wrapfs_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
static inline unsigned int wrapfs_major(dev_t d) { return major(d); }
static inline unsigned int wrapfs_minor(dev_t d) { return minor(d); }

static const unsigned int wrapfs_ioc_refresh = WRAPFS_IOC_REFRESH;


// Relaxed counters in a plain array (Swift's Atomic cannot live in one), for the status statistics.
static inline void wrapfs_counter_add(uint64_t *counter, uint64_t value) { __atomic_fetch_add(counter, value, __ATOMIC_RELAXED); }
static inline uint64_t wrapfs_counter_load(const uint64_t *counter) { return __atomic_load_n(counter, __ATOMIC_RELAXED); }
static inline uint64_t wrapfs_counter_add_fetch(uint64_t *counter, uint64_t value) { return __atomic_add_fetch(counter, value, __ATOMIC_RELAXED); }
static inline uint64_t wrapfs_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}


// The control socket: accept with close-on-exec, and the connecting process's user.
// accept4 and struct ucred are GNU: the header must not define _GNU_SOURCE (Swift's Glibc module
// sees glibc without it, and two views of one header fail a clean build), so they go by the kernel ABI.
#include <sys/socket.h>
struct wrapfs_ucred { pid_t pid; uid_t uid; gid_t gid; };
static inline int wrapfs_accept(int fd) { return (int)syscall(SYS_accept4, fd, NULL, NULL, SOCK_CLOEXEC); }
static inline int wrapfs_peer_uid(int fd, uid_t *uid) {
    struct wrapfs_ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    *uid = cred.uid;
    return 0;
}


// Calls the libc compatibility tests make that Swift cannot reach directly: GNU extensions (by
// system call number and the kernel's constants, for the reason above) and macros over macros.
#include <sys/sendfile.h>
static inline ssize_t wrapfs_copy_file_range(int in, int64_t *in_off, int out, int64_t *out_off, size_t len) {
    return (ssize_t)syscall(SYS_copy_file_range, in, in_off, out, out_off, len, 0u);
}
static inline ssize_t wrapfs_sendfile(int out, int in, off_t *offset, size_t count) { return sendfile(out, in, offset, count); }
// splice(2) with its flags, as libfuse passes them to the session's custom I/O.
static inline ssize_t wrapfs_splice_flags(int in, off_t *in_off, int out, off_t *out_off, size_t len, unsigned flags) {
    return (ssize_t)syscall(SYS_splice, in, in_off, out, out_off, len, flags);
}
static inline ssize_t wrapfs_splice(int in, int64_t *in_off, int out, int64_t *out_off, size_t len) {
    return wrapfs_splice_flags(in, (off_t *)in_off, out, (off_t *)out_off, len, 0u);
}
static inline int wrapfs_syncfs(int fd) { return (int)syscall(SYS_syncfs, fd); }
static const int wrapfs_o_tmpfile = 020000000 | O_DIRECTORY;  // __O_TMPFILE of x86 and the generic ABI
static const int wrapfs_f_ofd_getlk = 36;
static const int wrapfs_f_ofd_setlk = 37;
static const unsigned long wrapfs_fs_ioc_getflags = FS_IOC_GETFLAGS;
static const unsigned long wrapfs_fs_ioc_setflags = FS_IOC_SETFLAGS;
static const unsigned long wrapfs_fs_ioc_fsgetxattr = FS_IOC_FSGETXATTR;
static const unsigned long wrapfs_fs_ioc_fssetxattr = FS_IOC_FSSETXATTR;
static const int wrapfs_fsxattr_size = (int)sizeof(struct fsxattr);
static inline int wrapfs_ioctl_buffer(int fd, unsigned long cmd, void *arg) { return ioctl(fd, cmd, arg); }

#endif
