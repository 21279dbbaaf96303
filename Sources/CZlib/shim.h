// C glue for zlib: one deflate and one inflate stream per thread, reset for every page.
#ifndef WRAPFS_CZLIB_SHIM_H
#define WRAPFS_CZLIB_SHIM_H
#include <zlib.h>
#include <pthread.h>
#include <stdlib.h>

// compress2/uncompress set up and free a stream (about 300 KiB at level 6) for every call;
// a page-at-a-time codec keeps one per thread instead, freed when the thread ends.
struct wrapfs_zstreams {
    z_stream deflate, inflate;
    int deflateLevel;  // 0: not initialised
    int inflateReady;
};

static inline struct wrapfs_zstreams *wrapfs_zstreams_new(void) { return calloc(1, sizeof(struct wrapfs_zstreams)); }

// Frees a thread's streams (the destructor of the thread-specific key that holds them).
static inline void wrapfs_zstreams_free(void *p) {
    struct wrapfs_zstreams *z = p;
    if (!z) return;
    if (z->deflateLevel) deflateEnd(&z->deflate);
    if (z->inflateReady) inflateEnd(&z->inflate);
    free(z);
}

// Deflates src into dst (zlib format); *dstLen in: room, out: bytes written. Z_OK when it fit.
static inline int wrapfs_deflate(struct wrapfs_zstreams *z, unsigned char *dst, unsigned long *dstLen,
                                 const unsigned char *src, unsigned long srcLen, int level) {
    if (z->deflateLevel != level) {
        if (z->deflateLevel) deflateEnd(&z->deflate);
        z->deflateLevel = 0;
        int rc = deflateInit(&z->deflate, level);
        if (rc != Z_OK) return rc;
        z->deflateLevel = level;
    } else if (deflateReset(&z->deflate) != Z_OK) {
        return Z_STREAM_ERROR;
    }
    z->deflate.next_in = (Bytef *)src;
    z->deflate.avail_in = (uInt)srcLen;
    z->deflate.next_out = dst;
    z->deflate.avail_out = (uInt)*dstLen;
    int rc = deflate(&z->deflate, Z_FINISH);
    *dstLen = z->deflate.total_out;
    return rc == Z_STREAM_END ? Z_OK : (rc == Z_OK ? Z_BUF_ERROR : rc);
}

// Inflates src into dst; *dstLen in: room, out: bytes written. Z_OK when the stream ended.
static inline int wrapfs_inflate(struct wrapfs_zstreams *z, unsigned char *dst, unsigned long *dstLen,
                                 const unsigned char *src, unsigned long srcLen) {
    if (!z->inflateReady) {
        int rc = inflateInit(&z->inflate);
        if (rc != Z_OK) return rc;
        z->inflateReady = 1;
    } else if (inflateReset(&z->inflate) != Z_OK) {
        return Z_STREAM_ERROR;
    }
    z->inflate.next_in = (Bytef *)src;
    z->inflate.avail_in = (uInt)srcLen;
    z->inflate.next_out = dst;
    z->inflate.avail_out = (uInt)*dstLen;
    int rc = inflate(&z->inflate, Z_FINISH);
    *dstLen = z->inflate.total_out;
    if (rc == Z_STREAM_END) return z->inflate.avail_in == 0 ? Z_OK : Z_DATA_ERROR;
    return rc == Z_OK || rc == Z_BUF_ERROR ? Z_DATA_ERROR : rc;
}
#endif
