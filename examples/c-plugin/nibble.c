/* nibble: a complete Wrapfs codec plugin in C. It swaps the two halves of every byte (0x12 ->
 * 0x21): size-preserving, its own inverse, and zero stays zero, so holes stay holes.
 *
 * Build: cc -O2 -shared -fPIC -I include examples/c-plugin/nibble.c -o nibble.so
 * Mount: wrapfs-mount --codec-plugin ./nibble.so --codec nibble LOWER MOUNTPOINT
 * Option: --codec-option page-size=N (a power of two, default 4096)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wrapfs_codec.h"

static long swap_nibbles(const uint8_t *in, size_t n, uint8_t *out, size_t room) {
    if (n > room) return -EIO;
    for (size_t i = 0; i < n; i++) out[i] = (uint8_t)((in[i] << 4) | (in[i] >> 4));  /* in place is fine */
    return (long)n;
}

static long nibble_encode(void *state, const uint8_t *page, size_t page_len, uint8_t *slot, size_t slot_size,
                          const struct wrapfs_codec_page *where) {
    (void)state; (void)where;
    return swap_nibbles(page, page_len, slot, slot_size);
}

static long nibble_decode(void *state, const uint8_t *slot, size_t slot_len, uint8_t *page, size_t page_size,
                          const struct wrapfs_codec_page *where) {
    (void)state; (void)where;
    return swap_nibbles(slot, slot_len, page, page_size);
}

uint32_t wrapfs_codec_abi_version(void) { return WRAPFS_CODEC_ABI_VERSION; }

int wrapfs_codec_init(struct wrapfs_codec *codec, const char *const *options, char *error, size_t error_size) {
    unsigned long page = 4096;
    for (; options && *options; options++) {
        if (strncmp(*options, "page-size=", 10) == 0 || strncmp(*options, "input-size=", 11) == 0) {
            page = strtoul(strchr(*options, '=') + 1, NULL, 10);
        }
    }
    if (page < 512 || page > (1u << 20) || (page & (page - 1))) {
        snprintf(error, error_size, "page-size must be a power of two between 512 and 1048576");
        return -EINVAL;
    }
    codec->abi_version = WRAPFS_CODEC_ABI_VERSION;
    codec->name = "nibble";
    codec->summary = "swaps the halves of every byte (size-preserving; a C plugin example)";
    codec->page_size = (uint32_t)page;
    codec->slot_size = (uint32_t)page;
    codec->encode = nibble_encode;
    codec->decode = nibble_decode;
    return 0;
}
