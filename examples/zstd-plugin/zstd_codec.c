/* zstd: a Wrapfs codec plugin that compresses each page with Zstandard (libzstd).
 * Size-changing: slot = 4-byte little-endian frame length | zstd frame | unused tail (a hole).
 * A zstd frame starts with its magic number, so no slot is ever all zeros.
 *
 * Build: cc -O2 -shared -fPIC -I include examples/zstd-plugin/zstd_codec.c -lzstd -o zstd.so
 * Mount: wrapfs-mount --codec-plugin ./zstd.so --codec zstd LOWER MOUNTPOINT
 * Options: --codec-option level=N (1..19, default 3), page-size=N (default 65536)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include "wrapfs_codec.h"

struct zstd_state { int level; };

/* One compression and one decompression context per thread: pages are encoded on many threads. */
static __thread ZSTD_CCtx *compressor;
static __thread ZSTD_DCtx *decompressor;

static long zstd_encode(void *state, const uint8_t *page, size_t page_len, uint8_t *slot, size_t slot_size,
                        const struct wrapfs_codec_page *where) {
    (void)where;
    struct zstd_state *s = state;
    if (!compressor && !(compressor = ZSTD_createCCtx())) return -ENOMEM;
    if (slot_size < 4) return -EIO;
    size_t n = ZSTD_compressCCtx(compressor, slot + 4, slot_size - 4, page, page_len, s->level);
    if (ZSTD_isError(n)) return -EIO;
    slot[0] = (uint8_t)n; slot[1] = (uint8_t)(n >> 8); slot[2] = (uint8_t)(n >> 16); slot[3] = (uint8_t)(n >> 24);
    return (long)(n + 4);
}

static long zstd_decode(void *state, const uint8_t *slot, size_t slot_len, uint8_t *page, size_t page_size,
                        const struct wrapfs_codec_page *where) {
    (void)state; (void)where;
    if (!decompressor && !(decompressor = ZSTD_createDCtx())) return -ENOMEM;
    if (slot_len < 4) return -EIO;
    size_t n = (size_t)slot[0] | (size_t)slot[1] << 8 | (size_t)slot[2] << 16 | (size_t)slot[3] << 24;
    if (n > slot_len - 4) return -EIO;  /* a torn or foreign slot */
    size_t out = ZSTD_decompressDCtx(decompressor, page, page_size, slot + 4, n);
    if (ZSTD_isError(out)) return -EIO;
    return (long)out;
}

static void zstd_destroy(void *state) { free(state); }

uint32_t wrapfs_codec_abi_version(void) { return WRAPFS_CODEC_ABI_VERSION; }

int wrapfs_codec_init(struct wrapfs_codec *codec, const char *const *options, char *error, size_t error_size) {
    unsigned long page = 65536;
    long level = 3;
    for (; options && *options; options++) {
        const char *o = *options, *v = strchr(o, '=');
        if (!v) continue;
        v++;
        if (!strncmp(o, "page-size=", 10) || !strncmp(o, "input-size=", 11)) page = strtoul(v, NULL, 10);
        else if (!strncmp(o, "level=", 6)) level = strtol(v, NULL, 10);
    }
    if (page < 512 || page > (1u << 20) || (page & (page - 1))) {
        snprintf(error, error_size, "page-size must be a power of two between 512 and 1048576");
        return -EINVAL;
    }
    if (level < 1 || level > ZSTD_maxCLevel()) {
        snprintf(error, error_size, "level must be between 1 and %d", ZSTD_maxCLevel());
        return -EINVAL;
    }
    struct zstd_state *s = malloc(sizeof *s);
    if (!s) return -ENOMEM;
    s->level = (int)level;
    codec->abi_version = WRAPFS_CODEC_ABI_VERSION;
    codec->name = "zstd";
    codec->summary = "Zstandard per page in fixed slots (size-changing; options level, page-size)";
    codec->page_size = (uint32_t)page;
    codec->slot_size = (uint32_t)(ZSTD_compressBound(page) + 4);
    codec->state = s;
    codec->encode = zstd_encode;
    codec->decode = zstd_decode;
    codec->destroy = zstd_destroy;
    return 0;
}
