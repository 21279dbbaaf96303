/* wrapfs_codec.h: the C ABI of Wrapfs codec plugins (version 1).
 *
 * A plugin is a shared object loaded with `wrapfs-mount --codec-plugin PATH.so`. It exports
 *
 *     uint32_t wrapfs_codec_abi_version(void);          // returns WRAPFS_CODEC_ABI_VERSION
 *     int wrapfs_codec_init(struct wrapfs_codec *codec, // zeroed by the caller; fill it in
 *                           const char *const *options, // "key=value" strings, NULL-terminated
 *                           char *error, size_t error_size); // a message when returning nonzero
 *
 * and then serves pages through the function pointers it filled in. The page engine does the
 * rest (alignment, read-modify-write, appends, truncation, holes, mmap, concurrency): a file is
 * `header | slot 0 | slot 1 | ...`, slot i holding page i encoded, at most slot_size bytes.
 *
 * Threads: encode and decode are called from many threads at once, for different pages (and
 * different files); keep per-call state on the stack or per thread.
 * Errors: encode and decode return the output length, or a negative errno (-EIO for a page that
 * does not check out). A length beyond the output buffer is treated as an error (EIO for that
 * page), never trusted. Zeros: a slot of all zero bytes reads as a page of zeros (a hole) without
 * calling decode, so encode must never turn a page that is not all zeros into all-zero bytes.
 */
#ifndef WRAPFS_CODEC_H
#define WRAPFS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define WRAPFS_CODEC_ABI_VERSION 1

/* Where a page sits: passed to every encode and decode call. */
struct wrapfs_codec_page {
    uint64_t index;            /* page i holds logical bytes i*page_size ..< (i+1)*page_size */
    const uint8_t *header;     /* the file's header (header_size bytes; NULL when 0) */
    size_t header_size;
};

struct wrapfs_codec {
    uint32_t abi_version;      /* set to WRAPFS_CODEC_ABI_VERSION */
    const char *name;          /* the --codec name; must stay valid while loaded */
    const char *summary;       /* one line for `wrapfs-mount codecs` */
    uint32_t page_size;        /* plain bytes per page: a power of two, 512 ... 1 MiB */
    uint32_t slot_size;        /* most bytes one encoded page takes (>= 1) */
    uint32_t header_size;      /* bytes before slot 0 in every non-empty file (0: none) */
    void *state;               /* handed back to every call */

    /* Encodes page[0 ..< page_len] (1 ... page_size bytes) into slot (slot_size bytes). */
    long (*encode)(void *state, const uint8_t *page, size_t page_len,
                   uint8_t *slot, size_t slot_size, const struct wrapfs_codec_page *where);
    /* Decodes slot[0 ..< slot_len] (the stored bytes, possibly followed by the zeros of an
     * unused slot tail) into page (page_size bytes); returns the plain length. */
    long (*decode)(void *state, const uint8_t *slot, size_t slot_len,
                   uint8_t *page, size_t page_size, const struct wrapfs_codec_page *where);
    /* Optional: fill a new file's header; check one read from a file (0: fine, else -errno). */
    int (*make_header)(void *state, uint8_t *header, size_t size);
    int (*check_header)(void *state, const uint8_t *header, size_t size);
    /* Optional: called once at unmount. */
    void (*destroy)(void *state);
};

#endif
