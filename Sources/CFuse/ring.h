// C glue for FUSE over io_uring: a minimal io_uring (raw syscalls, 128-byte SQEs) and the kernel's
// FUSE ring ABI (7.42), which the installed headers predate. Swift drives it (Bridge/FuseRing.swift).
#ifndef WRAPFS_CFUSE_RING_H
#define WRAPFS_CFUSE_RING_H

#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <poll.h>
#include <sys/eventfd.h>

// include/uapi/linux/fuse.h, 7.42 (Linux 6.14).
#define WRAPFS_FUSE_OVER_IO_URING_FLAGS2 (1u << 9)  // FUSE_OVER_IO_URING is bit 41 of flags | flags2 << 32
#define WRAPFS_FUSE_INIT_EXT (1u << 30)
#define WRAPFS_FUSE_IO_URING_CMD_REGISTER 1u
#define WRAPFS_FUSE_IO_URING_CMD_COMMIT_AND_FETCH 2u

struct wrapfs_fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;   // the request's commit ID, echoed in the commit command
    uint32_t payload_sz;  // bytes of the payload buffer in use, either way
    uint32_t padding;
    uint64_t reserved;
};

// iov[0] of a registered entry: in_out holds fuse_in_header on the way in and fuse_out_header on
// the way out; op_in the opcode's fixed argument struct; then the entry's in/out record.
struct wrapfs_fuse_uring_req_header {
    char in_out[128];
    char op_in[128];
    struct wrapfs_fuse_uring_ent_in_out ring_ent_in_out;
};

// The command area (80 bytes) of a 128-byte SQE.
struct wrapfs_fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

// One io_uring instance, its three shared mappings.
struct wrapfs_ring {
    int fd;
    unsigned sq_entries, cq_entries, sq_mask, cq_mask;
    unsigned *sq_head, *sq_tail, *sq_array, *cq_head, *cq_tail;
    struct io_uring_sqe *sqes;  // 128 bytes each (IORING_SETUP_SQE128)
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_map_len, cq_map_len, sqes_len;
};

// Sets up `r` with room for `entries` submissions; 0 or -errno.
static inline int wrapfs_ring_open(struct wrapfs_ring *r, unsigned entries) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    memset(r, 0, sizeof *r);
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 2;
    int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (fd < 0) return -errno;
    r->fd = fd;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->sqes_len = (size_t)p.sq_entries * 128;
    r->sq_map = mmap(0, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) goto fail;
    r->cq_map = mmap(0, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (r->cq_map == MAP_FAILED) goto fail;
    r->sqes = mmap(0, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) goto fail;
    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_head = (unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
fail:;
    int err = -errno;
    if (r->sq_map && r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_map_len);
    if (r->cq_map && r->cq_map != MAP_FAILED) munmap(r->cq_map, r->cq_map_len);
    close(fd);
    r->fd = -1;
    return err;
}

static inline void wrapfs_ring_close(struct wrapfs_ring *r) {
    if (r->fd < 0) return;
    munmap(r->sqes, r->sqes_len);
    munmap(r->cq_map, r->cq_map_len);
    munmap(r->sq_map, r->sq_map_len);
    close(r->fd);
    r->fd = -1;
}

// The next free SQE, zeroed, or NULL when the submission queue is full. The caller serializes.
static inline struct io_uring_sqe *wrapfs_ring_next_sqe(struct wrapfs_ring *r) {
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    unsigned tail = *r->sq_tail;
    if (tail - head >= r->sq_entries) return NULL;
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)((char *)r->sqes + (size_t)(tail & r->sq_mask) * 128);
    memset(sqe, 0, 128);
    r->sq_array[tail & r->sq_mask] = tail & r->sq_mask;
    return sqe;
}

static inline void wrapfs_ring_publish(struct wrapfs_ring *r) {
    __atomic_store_n(r->sq_tail, *r->sq_tail + 1, __ATOMIC_RELEASE);
}

// Queues a FUSE ring command on /dev/fuse descriptor `fuse_fd`: REGISTER with the entry's two
// buffers (`iov`), or COMMIT_AND_FETCH of `commit_id` (`iov` NULL). 0 or -EBUSY (queue full).
static inline int wrapfs_ring_push_fuse(struct wrapfs_ring *r, int fuse_fd, uint32_t cmd_op, uint64_t user_data,
                                        uint16_t qid, uint64_t commit_id, const struct iovec *iov) {
    struct io_uring_sqe *sqe = wrapfs_ring_next_sqe(r);
    if (!sqe) return -EBUSY;
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fuse_fd;
    sqe->cmd_op = cmd_op;
    sqe->user_data = user_data;
    if (iov) {
        sqe->addr = (uint64_t)(uintptr_t)iov;
        sqe->len = 2;
    }
    struct wrapfs_fuse_uring_cmd_req *req = (struct wrapfs_fuse_uring_cmd_req *)sqe->cmd;
    req->qid = qid;
    req->commit_id = commit_id;
    wrapfs_ring_publish(r);
    return 0;
}

// Queues a one-shot poll for input on `fd` (the stop signal). 0 or -EBUSY.
static inline int wrapfs_ring_push_poll(struct wrapfs_ring *r, int fd, uint64_t user_data) {
    struct io_uring_sqe *sqe = wrapfs_ring_next_sqe(r);
    if (!sqe) return -EBUSY;
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = POLLIN;
    sqe->user_data = user_data;
    wrapfs_ring_publish(r);
    return 0;
}

// Submissions queued and not yet taken by the kernel.
static inline unsigned wrapfs_ring_unsubmitted(const struct wrapfs_ring *r) { return *r->sq_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE); }

// Submits what is queued and, with `wait`, sleeps until a completion is there. >= 0 or -errno.
static inline int wrapfs_ring_enter(struct wrapfs_ring *r, int wait) {
    long rc = syscall(__NR_io_uring_enter, r->fd, wrapfs_ring_unsubmitted(r), wait ? 1 : 0, wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
    return rc < 0 ? -errno : (int)rc;
}

// Takes the oldest completion: 1 with its data and result, or 0 when there is none.
static inline int wrapfs_ring_take(struct wrapfs_ring *r, uint64_t *user_data, int32_t *res) {
    unsigned head = *r->cq_head;
    if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) return 0;
    struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
    *user_data = cqe->user_data;
    *res = cqe->res;
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    return 1;
}

static inline uint64_t wrapfs_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void wrapfs_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
// Subtracts one and returns what is left (acquire and release, as a reference count).
static inline uint64_t wrapfs_release_one(uint64_t *p) { return __atomic_sub_fetch(p, 1, __ATOMIC_ACQ_REL); }

static inline int wrapfs_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

// Binds the calling thread to one CPU; 0 or -errno (a container's cpuset may refuse).
static inline int wrapfs_pin_to_cpu(int cpu) {
    unsigned long mask[16];
    memset(mask, 0, sizeof mask);
    if (cpu < 0 || cpu >= (int)(sizeof mask * 8)) return -EINVAL;
    mask[cpu / (8 * sizeof(unsigned long))] |= 1ul << (cpu % (8 * sizeof(unsigned long)));
    return syscall(SYS_sched_setaffinity, 0, sizeof mask, mask) < 0 ? -errno : 0;
}

// Thread `tid` (0: the caller) yields to every other runnable thread (SCHED_IDLE), or competes
// as usual again (SCHED_OTHER); 0 or -errno.
static inline int wrapfs_sched_idle(int tid, int idle) {
    struct { int prio; } param = { 0 };
    return syscall(SYS_sched_setscheduler, tid, idle ? 5 /* SCHED_IDLE */ : 0 /* SCHED_OTHER */, &param) < 0 ? -errno : 0;
}
static inline int wrapfs_gettid(void) { return (int)syscall(SYS_gettid); }

// Completions waiting in `r` that no thread has taken yet.
static inline unsigned wrapfs_ring_waiting(const struct wrapfs_ring *r) {
    return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
}
static inline unsigned wrapfs_ring_head(const struct wrapfs_ring *r) { return __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE); }

#endif
