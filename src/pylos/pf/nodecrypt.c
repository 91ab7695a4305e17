/* AES-128-GCM over a run of protected-files nodes in one call (docs/performance.md).
 *
 * Every 4 KiB node of a protected file has its own key and an all-zero IV; its key and tag
 * live in its parent's slot (key 16 B, tag 16 B). From Python, each node costs a cipher
 * object and a call (~5 us, of which the cipher itself is ~1.5 us), which caps one core at
 * ~850 MB/s before any other work. Here a whole run costs one call; the format and the
 * cipher (OpenSSL's EVP AES-128-GCM) are the same, so the bytes are identical.
 *
 * Built by pylos.pf.native into the installation's library directory; loaded with ctypes.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <unistd.h>

#define NODE_SIZE 4096
#define KEY_SIZE 16
#define MAC_SIZE 16

static const unsigned char zero_iv[12];

/* Decrypt `count` nodes: ciphertext[i] with slots[i] = key || tag into plaintext[i] (the
 * same buffer is fine: pf_read_nodes decrypts in place).
 * Returns -1 when every tag matched, else the index of the first node whose tag did not
 * (its plaintext and those after it are unspecified), or -2 when OpenSSL failed. */
static long pf_decrypt_nodes(const unsigned char *ciphertext, unsigned char *plaintext,
                             const unsigned char *slots, long count)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    long result = -1;
    int length;
    if (ctx == NULL || !EVP_DecryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, NULL, NULL))
        result = -2;
    for (long i = 0; result == -1 && i < count; i++) {
        const unsigned char *key = slots + i * (KEY_SIZE + MAC_SIZE);
        unsigned char tag[MAC_SIZE];
        for (int b = 0; b < MAC_SIZE; b++)
            tag[b] = key[KEY_SIZE + b];
        if (!EVP_DecryptInit_ex(ctx, NULL, NULL, key, zero_iv)
            || !EVP_DecryptUpdate(ctx, plaintext + i * NODE_SIZE, &length,
                                  ciphertext + i * NODE_SIZE, NODE_SIZE)
            || !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, MAC_SIZE, tag))
            result = -2;
        else if (EVP_DecryptFinal_ex(ctx, plaintext + i * NODE_SIZE + length, &length) <= 0)
            result = i;
    }
    EVP_CIPHER_CTX_free(ctx);
    return result;
}

/* Read `count` nodes at `offset` of `fd` into `buffer` and decrypt them there (a run's
 * read and cipher in one call from Python: no ciphertext buffer, one transition). *got is
 * the bytes read, or -errno. Returns what pf_decrypt_nodes does, or -3 when the read came
 * short or failed (nothing decrypted). */
long pf_read_nodes(int fd, long long offset, unsigned char *buffer, const unsigned char *slots,
                   long count, long *got)
{
    long want = count * NODE_SIZE, done = 0;
    while (done < want) {
        ssize_t n = pread(fd, buffer + done, want - done, offset + done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *got = -errno;
            return -3;
        }
        if (n == 0)
            break;
        done += n;
    }
    *got = done;
    return done == want ? pf_decrypt_nodes(buffer, buffer, slots, count) : -3;
}

/* Encrypt `count` nodes: plaintext[i] under keys[i] into ciphertext[i]; slots[i] gets
 * keys[i] and the tag, as the parent's slot holds them. Returns 0, or -2 when OpenSSL
 * failed. */
long pf_encrypt_nodes(const unsigned char *plaintext, unsigned char *ciphertext,
                      const unsigned char *keys, unsigned char *slots, long count)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    long result = 0;
    int length;
    if (ctx == NULL || !EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, NULL, NULL))
        result = -2;
    for (long i = 0; result == 0 && i < count; i++) {
        if (!EVP_EncryptInit_ex(ctx, NULL, NULL, keys + i * KEY_SIZE, zero_iv)
            || !EVP_EncryptUpdate(ctx, ciphertext + i * NODE_SIZE, &length,
                                  plaintext + i * NODE_SIZE, NODE_SIZE)
            || !EVP_EncryptFinal_ex(ctx, ciphertext + i * NODE_SIZE + length, &length)
            || !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, MAC_SIZE,
                                    slots + i * (KEY_SIZE + MAC_SIZE) + KEY_SIZE))
            result = -2;
        for (int b = 0; b < KEY_SIZE; b++)
            slots[i * (KEY_SIZE + MAC_SIZE) + b] = keys[i * KEY_SIZE + b];
    }
    EVP_CIPHER_CTX_free(ctx);
    return result;
}
