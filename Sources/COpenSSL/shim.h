// C glue for OpenSSL's libcrypto: AES-GCM and AES-CTR page calls, AES-SIV names, HKDF, scrypt, random bytes.
// Every cipher and MAC block is OpenSSL's; this file only sequences its EVP calls (AES-SIV's S2V
// and counter are composed of them as RFC 5297 and OpenSSL's own SIV compose them).
#ifndef WRAPFS_COPENSSL_SHIM_H
#define WRAPFS_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <stdlib.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <string.h>

// A cipher context keyed once: AES-256-GCM with 16-byte IVs (as gocryptfs), or AES-256-CTR.
static inline EVP_CIPHER_CTX *wrapfs_cipher_new(int gcm, int encrypt, const unsigned char *key) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) return NULL;
    const EVP_CIPHER *cipher = gcm ? EVP_aes_256_gcm() : EVP_aes_256_ctr();
    int ok = EVP_CipherInit_ex(c, cipher, NULL, NULL, NULL, encrypt) == 1
        && (!gcm || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 16, NULL) == 1)
        && EVP_CipherInit_ex(c, NULL, NULL, key, NULL, encrypt) == 1;
    if (!ok) { EVP_CIPHER_CTX_free(c); return NULL; }
    return c;
}
static inline void wrapfs_cipher_free(void *c) { EVP_CIPHER_CTX_free((EVP_CIPHER_CTX *)c); }

// AES-GCM: encrypts n bytes with a 16-byte iv and additional data; writes n bytes and a 16-byte tag.
static inline int wrapfs_gcm_seal(EVP_CIPHER_CTX *c, const unsigned char *iv, const unsigned char *aad, int aadLen,
                                  const unsigned char *in, int n, unsigned char *out, unsigned char *tag) {
    int len = 0, fin = 0;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1) return 0;
    if (EVP_EncryptUpdate(c, NULL, &len, aad, aadLen) != 1) return 0;
    if (EVP_EncryptUpdate(c, out, &len, in, n) != 1 || len != n) return 0;
    if (EVP_EncryptFinal_ex(c, out + len, &fin) != 1 || fin != 0) return 0;
    return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
}

// AES-GCM: decrypts and authenticates; 1 only if the tag checks out (out is then valid).
static inline int wrapfs_gcm_open(EVP_CIPHER_CTX *c, const unsigned char *iv, const unsigned char *aad, int aadLen,
                                  const unsigned char *in, int n, const unsigned char *tag, unsigned char *out) {
    int len = 0, fin = 0;
    if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, iv) != 1) return 0;
    if (EVP_DecryptUpdate(c, NULL, &len, aad, aadLen) != 1) return 0;
    if (EVP_DecryptUpdate(c, out, &len, in, n) != 1 || len != n) return 0;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) != 1) return 0;
    return EVP_DecryptFinal_ex(c, out + len, &fin) == 1 && fin == 0;
}

// AES-CTR from a 16-byte initial counter block: the same call encrypts and decrypts.
static inline int wrapfs_ctr_xor(EVP_CIPHER_CTX *c, const unsigned char *iv, const unsigned char *in, int n, unsigned char *out) {
    int len = 0, fin = 0;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) != 1) return 0;
    if (EVP_EncryptUpdate(c, out, &len, in, n) != 1 || len != n) return 0;
    return EVP_EncryptFinal_ex(c, out + len, &fin) == 1 && fin == 0;
}

// AES-SIV (RFC 5297) over one name: deterministic, authenticated. `cipher` is "AES-256-SIV"
// (64-byte key). Encrypting writes n bytes and the 16-byte tag; decrypting checks the tag.
static inline EVP_CIPHER *wrapfs_siv_cipher(void) { return EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL); }

// One thread's AES-SIV contexts: keyed templates for each direction, copied into a working
// context per name (a copy costs a third of keying a new context; an SIV context does one operation).
typedef struct { EVP_CIPHER_CTX *encrypt, *decrypt, *work; } wrapfs_siv_contexts;

static inline void wrapfs_siv_contexts_free(void *p) {
    wrapfs_siv_contexts *s = p;
    if (!s) return;
    EVP_CIPHER_CTX_free(s->encrypt); EVP_CIPHER_CTX_free(s->decrypt); EVP_CIPHER_CTX_free(s->work);
    free(s);
}

static inline wrapfs_siv_contexts *wrapfs_siv_contexts_new(EVP_CIPHER *cipher, const unsigned char *key) {
    wrapfs_siv_contexts *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->encrypt = EVP_CIPHER_CTX_new(); s->decrypt = EVP_CIPHER_CTX_new(); s->work = EVP_CIPHER_CTX_new();
    if (!s->encrypt || !s->decrypt || !s->work
        || EVP_CipherInit_ex2(s->encrypt, cipher, key, NULL, 1, NULL) != 1
        || EVP_CipherInit_ex2(s->decrypt, cipher, key, NULL, 0, NULL) != 1) {
        wrapfs_siv_contexts_free(s);
        return NULL;
    }
    return s;
}

static inline int wrapfs_siv_with(wrapfs_siv_contexts *s, int encrypt, const unsigned char *in, int n,
                                  unsigned char *out, unsigned char *tag) {
    EVP_CIPHER_CTX *c = s->work;
    int len = 0, fin = 0;
    if (EVP_CIPHER_CTX_copy(c, encrypt ? s->encrypt : s->decrypt) != 1) return 0;
    if (!encrypt && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) != 1) return 0;
    int ok = EVP_CipherUpdate(c, out, &len, in, n) == 1 && len == n && EVP_CipherFinal_ex(c, out + len, &fin) == 1;
    if (ok && encrypt) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1;
    return ok;
}

// AES-SIV as above, composed from OpenSSL's AES-256-CBC (S2V's AES-CMAC under the key's first
// half) and AES-256-CTR (under the second half), as OpenSSL's SIV does inside, without the copy,
// allocations and frees of an SIV context per name (most of a name's cost there). NameCipher
// checks it against OpenSSL's AES-SIV when it starts and uses OpenSSL's if they ever differ.
#define WRAPFS_SIV_MAX 512
typedef struct {
    EVP_CIPHER_CTX *cbc, *ctr;
    unsigned char sub1[16], sub2[16];  // CMAC's subkeys
    unsigned char d[16];               // S2V's first value: the CMAC of the zero block
} wrapfs_siv_composed;

static inline void wrapfs_siv_composed_free(void *p) {
    wrapfs_siv_composed *s = p;
    if (!s) return;
    EVP_CIPHER_CTX_free(s->cbc); EVP_CIPHER_CTX_free(s->ctr);
    OPENSSL_clear_free(s, sizeof *s);
}

// Doubling in GF(2^128) (RFC 5297 "dbl").
static inline void wrapfs_siv_dbl(unsigned char b[16]) {
    unsigned char carry = b[0] >> 7;
    for (int i = 0; i < 15; i++) b[i] = (unsigned char)((b[i] << 1) | (b[i + 1] >> 7));
    b[15] = (unsigned char)((b[15] << 1) ^ (0x87 & (unsigned char)-carry));
}

// AES-CMAC of the n bytes at m (room for n rounded up to a block), overwriting them: the last
// block takes its subkey, then the CBC chain from a zero IV ends in the MAC.
static inline int wrapfs_siv_cmac_inplace(wrapfs_siv_composed *s, unsigned char *m, int n, unsigned char out[16]) {
    unsigned char zero[16] = {0};
    int blocks = n == 0 ? 1 : (n + 15) / 16, len = 0;
    const unsigned char *k = s->sub1;
    if (n == 0 || n % 16) {
        memset(m + n, 0, (size_t)(blocks * 16 - n));
        m[n] = 0x80;
        k = s->sub2;
    }
    for (int i = 0; i < 16; i++) m[(blocks - 1) * 16 + i] ^= k[i];
    if (EVP_EncryptInit_ex(s->cbc, NULL, NULL, NULL, zero) != 1) return 0;
    if (EVP_EncryptUpdate(s->cbc, m, &len, m, blocks * 16) != 1 || len != blocks * 16) return 0;
    memcpy(out, m + (blocks - 1) * 16, 16);
    return 1;
}

static inline wrapfs_siv_composed *wrapfs_siv_composed_new(const unsigned char *key) {
    wrapfs_siv_composed *s = OPENSSL_zalloc(sizeof *s);
    if (!s) return NULL;
    unsigned char zero[16] = {0}, l[16] = {0}, m[32];
    int len = 0;
    s->cbc = EVP_CIPHER_CTX_new(); s->ctr = EVP_CIPHER_CTX_new();
    int ok = s->cbc && s->ctr
        && EVP_EncryptInit_ex(s->cbc, EVP_aes_256_cbc(), NULL, key, zero) == 1
        && EVP_CIPHER_CTX_set_padding(s->cbc, 0) == 1
        && EVP_EncryptInit_ex(s->ctr, EVP_aes_256_ctr(), NULL, key + 32, zero) == 1
        && EVP_EncryptUpdate(s->cbc, l, &len, zero, 16) == 1 && len == 16;  // L = AES(0)
    if (ok) {
        memcpy(s->sub1, l, 16); wrapfs_siv_dbl(s->sub1);
        memcpy(s->sub2, s->sub1, 16); wrapfs_siv_dbl(s->sub2);
        memset(m, 0, sizeof m);
        ok = wrapfs_siv_cmac_inplace(s, m, 16, s->d);
    }
    OPENSSL_cleanse(l, sizeof l);
    if (!ok) { wrapfs_siv_composed_free(s); return NULL; }
    return s;
}

// S2V of one string (no associated data): the synthetic IV. Names fit the stack buffer; a long
// symlink target takes a heap one.
static inline int wrapfs_siv_s2v(wrapfs_siv_composed *s, const unsigned char *p, int n, unsigned char v[16]) {
    unsigned char stack[WRAPFS_SIV_MAX + 16];
    if (n < 0) return 0;
    size_t room = (size_t)n + 32;
    unsigned char *m = room <= sizeof stack ? stack : malloc(room);
    if (!m) return 0;
    int len;
    if (n >= 16) {  // T = P xorend D
        memcpy(m, p, (size_t)n);
        for (int i = 0; i < 16; i++) m[n - 16 + i] ^= s->d[i];
        len = n;
    } else {        // T = dbl(D) xor pad(P)
        unsigned char dd[16];
        memcpy(dd, s->d, 16); wrapfs_siv_dbl(dd);
        memset(m, 0, 16); memcpy(m, p, (size_t)n); m[n] = 0x80;
        for (int i = 0; i < 16; i++) m[i] ^= dd[i];
        len = 16;
    }
    int ok = wrapfs_siv_cmac_inplace(s, m, len, v);
    OPENSSL_cleanse(m, (size_t)((len + 15) / 16 * 16));
    if (m != stack) free(m);
    return ok;
}

// Encrypts (tag out) or decrypts and authenticates (tag in) n bytes, as wrapfs_siv_with.
static inline int wrapfs_siv_composed_with(wrapfs_siv_composed *s, int encrypt, const unsigned char *in, int n,
                                           unsigned char *out, unsigned char *tag) {
    unsigned char q[16], v[16];
    int len = 0;
    if (encrypt && !wrapfs_siv_s2v(s, in, n, tag)) return 0;
    memcpy(q, tag, 16);
    q[8] &= 0x7f; q[12] &= 0x7f;  // the counter's two 31-bit halves never carry
    if (EVP_EncryptInit_ex(s->ctr, NULL, NULL, NULL, q) != 1) return 0;
    if (EVP_EncryptUpdate(s->ctr, out, &len, in, n) != 1 || len != n) return 0;
    if (encrypt) return 1;
    if (!wrapfs_siv_s2v(s, out, n, v) || CRYPTO_memcmp(v, tag, 16) != 0) {
        OPENSSL_cleanse(out, (size_t)n);
        return 0;
    }
    return 1;
}

// SHA-256 of a long encoded name: its short stand-in in the lower directory.
static inline int wrapfs_sha256(const unsigned char *in, size_t n, unsigned char *out) {
    return EVP_Digest(in, n, out, NULL, EVP_sha256(), NULL);
}

// HKDF-SHA256 (RFC 5869) with an empty salt: a subkey for one purpose from the master key.
static inline int wrapfs_hkdf_sha256(const unsigned char *key, int keyLen, const unsigned char *info, int infoLen,
                                     unsigned char *out, size_t outLen) {
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    if (!c) return 0;
    size_t len = outLen;
    int ok = EVP_PKEY_derive_init(c) > 0
        && EVP_PKEY_CTX_set_hkdf_md(c, EVP_sha256()) > 0
        && EVP_PKEY_CTX_set1_hkdf_key(c, key, keyLen) > 0
        && EVP_PKEY_CTX_add1_hkdf_info(c, info, infoLen) > 0
        && EVP_PKEY_derive(c, out, &len) > 0 && len == outLen;
    EVP_PKEY_CTX_free(c);
    return ok;
}
#endif
