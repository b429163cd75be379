/* A hostile publisher's trainer for the node's tests (issue 18, items 1 and 7): each mode tries
 * to carry something out of the hospital through what the node shows the publisher, or to
 * hold the node while it runs. One static binary, the mode chosen by argv[1]; built by the
 * tests with `gcc -static`; never shipped.
 *
 *   hex-name           fetches a record and names an output file after its pixels (hex)
 *   mrn-zip C1 C2 ...  writes a zip with one entry per candidate MRN, named and filled with it:
 *                      the guard's refusal names the entry holding a real identifier
 *   names MRN          names undeclared files and zip entries after pixel bytes (hex), the MRN
 *                      and `<entry ...>` labels, each holding the MRN
 *   sleep SECONDS      says hello, sleeps, then writes plain outputs and exits 0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "feed.h"

static void hello(void) { hello_as("publisher-test"); }

static void write_outputs(void) {
    float w[4] = {0.25f, -1.5f, 3.0f, 0.125f};
    char hdr[128];
    int hl = snprintf(hdr, sizeof hdr,
        "{\"w\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}");
    while (hl % 8) hdr[hl++] = ' ';
    uint64_t len = (uint64_t)hl;
    int fd = open("/out/model.safetensors", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("model");
    write_all(fd, &len, 8);
    write_all(fd, hdr, (size_t)hl);
    write_all(fd, w, sizeof w);
    close(fd);
    const char *m = "{\"epochs\":1,\"train_records\":1,\"loss\":0.5}";
    write_file("/out/metrics.json", m, strlen(m));
}

/* --- a stored (uncompressed) zip, enough for the guard to read its entries --- */

static uint32_t crc_table[256];

static uint32_t crc32(const unsigned char *p, size_t n) {
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static unsigned char zip[1 << 20];
static size_t zlen;

static void put16(unsigned char *p, uint16_t v) { p[0] = v & 0xFF; p[1] = v >> 8; }
static void put32(unsigned char *p, uint32_t v) { put16(p, v & 0xFFFF); put16(p + 2, v >> 16); }

static void zput(const void *b, size_t n) {
    if (zlen + n > sizeof zip) { fprintf(stderr, "zip too large\n"); exit(2); }
    memcpy(zip + zlen, b, n);
    zlen += n;
}

static unsigned char central[1 << 16];
static size_t clen;
static int zentries;

/* Adds one stored entry to the zip being built. */
static void zip_add(const char *name, const char *data, size_t dl) {
    uint16_t nl = (uint16_t)strlen(name);
    uint32_t crc = crc32((const unsigned char *)data, dl);
    uint32_t offset = (uint32_t)zlen;
    unsigned char h[30] = {0};
    put32(h, 0x04034b50); put16(h + 4, 20); put32(h + 14, crc);
    put32(h + 18, (uint32_t)dl); put32(h + 22, (uint32_t)dl); put16(h + 26, nl);
    zput(h, 30); zput(name, nl); zput(data, dl);
    unsigned char c[46] = {0};
    put32(c, 0x02014b50); put16(c + 4, 20); put16(c + 6, 20); put32(c + 16, crc);
    put32(c + 20, (uint32_t)dl); put32(c + 24, (uint32_t)dl); put16(c + 28, nl);
    put32(c + 42, offset);
    memcpy(central + clen, c, 46); clen += 46;
    memcpy(central + clen, name, nl); clen += nl;
    zentries++;
}

/* Ends the zip and writes it to `path`. */
static void zip_write(const char *path) {
    uint32_t cd_offset = (uint32_t)zlen;
    zput(central, clen);
    unsigned char e[22] = {0};
    put32(e, 0x06054b50); put16(e + 8, (uint16_t)zentries); put16(e + 10, (uint16_t)zentries);
    put32(e + 12, (uint32_t)clen); put32(e + 16, cd_offset);
    zput(e, 22);
    write_file(path, zip, zlen);
}

static int mrn_zip(int n, char **cands) {
    for (int i = 0; i < n; i++) {
        char name[256], data[256];
        snprintf(name, sizeof name, "%s.json", cands[i]);
        int dl = snprintf(data, sizeof data, "{\"id\":\"%s\"}", cands[i]);
        zip_add(name, data, (size_t)dl);
    }
    write_outputs();
    zip_write("/out/model.safetensors");
    return 0;
}

/* Names files and zip entries after pixel bytes, an MRN and a node-like `<entry N>` label, each
 * holding the MRN so the guard has something to say about it. */
static int names(const char *mrn) {
    hello();
    unsigned char *px; size_t n;
    free(call("{\"op\":\"fetch\",\"index\":0}", &px, &n));
    if (n < 64) { fprintf(stderr, "record too small\n"); return 2; }
    char hex[40] = "px-";
    for (int i = 0; i < 16; i++) sprintf(hex + 3 + 2 * i, "%02x", px[n / 2 + (size_t)i]);
    char data[256], path[512], entry[256];
    int dl = snprintf(data, sizeof data, "{\"id\":\"%s\"}", mrn);
    write_outputs();
    snprintf(path, sizeof path, "/out/%s", hex);
    write_file(path, "x", 1);
    snprintf(path, sizeof path, "/out/%s.bin", mrn);
    write_file(path, data, (size_t)dl);
    snprintf(path, sizeof path, "/out/y!<entry %s>", hex);
    write_file(path, data, (size_t)dl);
    snprintf(entry, sizeof entry, "%s.json", hex);
    zip_add(entry, data, (size_t)dl);
    snprintf(entry, sizeof entry, "<entry %s>", hex);
    zip_add(entry, data, (size_t)dl);
    snprintf(entry, sizeof entry, "%s.json", mrn);
    zip_add(entry, data, (size_t)dl);
    zip_add("<entry 12345678>", data, (size_t)dl);
    zip_write("/out/model.safetensors");
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "hex-name")) {
        hello();
        unsigned char *px; size_t n;
        free(call("{\"op\":\"fetch\",\"index\":0}", &px, &n));
        if (n < 64) { fprintf(stderr, "record too small\n"); return 2; }
        /* 16 pixel bytes from the middle of the image, where the synthetic signal is. */
        char name[64] = "/out/px-";
        for (int i = 0; i < 16; i++) sprintf(name + 8 + 2 * i, "%02x", px[n / 2 + (size_t)i]);
        write_outputs();
        write_file(name, "x", 1);
        return 0;
    }
    if (!strcmp(mode, "mrn-zip")) return mrn_zip(argc - 2, argv + 2);
    if (!strcmp(mode, "names")) return names(argc > 2 ? argv[2] : "");
    if (!strcmp(mode, "sleep")) {
        hello();
        sleep((unsigned)atoi(argc > 2 ? argv[2] : "10"));
        write_outputs();
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
