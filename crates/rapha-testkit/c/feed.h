/* The C test trainers' side of protocol v1 (docs/trainer-protocol.md): connect to the feed,
 * one request and its answer, hello, and writing an output file. Included by the enclave's
 * test trainer (crates/rapha-enclave/testdata/trainer.c) and the node's hostile publisher
 * trainer (crates/rapha-node/tests/publisher_trainer.c); rapha_testkit::trainer compiles them
 * with this folder on the include path. Test-only; never shipped. */
#ifndef RAPHA_TESTKIT_FEED_H
#define RAPHA_TESTKIT_FEED_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int feed = -1;

static void die(const char *what) { fprintf(stderr, "trainer: %s: %s\n", what, strerror(errno)); exit(2); }

static void write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) { ssize_t w = write(fd, p, n); if (w <= 0) die("write"); p += w; n -= (size_t)w; }
}

static void read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n) { ssize_t r = read(fd, p, n); if (r <= 0) die("read"); p += r; n -= (size_t)r; }
}

static void feed_connect(void) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, "/rapha/data.sock");
    feed = socket(AF_UNIX, SOCK_STREAM, 0);
    if (feed < 0 || connect(feed, (struct sockaddr *)&a, sizeof a) < 0) die("connect feed");
}

/* Sends a request; returns the response header (malloc'd, NUL-terminated) and payload. */
static char *call(const char *req, unsigned char **payload, size_t *plen) {
    uint32_t n = (uint32_t)strlen(req);
    write_all(feed, &n, 4);
    write_all(feed, req, n);
    read_all(feed, &n, 4);
    char *h = malloc(n + 1);
    read_all(feed, h, n);
    h[n] = 0;
    size_t pl = 0;
    char *p = strstr(h, "\"payload\":");
    if (p) pl = strtoull(p + 10, 0, 10);
    unsigned char *buf = pl ? malloc(pl) : 0;
    if (pl) read_all(feed, buf, pl);
    if (payload) *payload = buf; else free(buf);
    if (plen) *plen = pl;
    return h;
}

/* Connects and says hello as `trainer` (a JSON string's contents); exits 2 if refused. */
static void hello_as(const char *trainer) {
    feed_connect();
    char req[256];
    snprintf(req, sizeof req, "{\"op\":\"hello\",\"protocol\":1,\"trainer\":\"%s\"}", trainer);
    char *h = call(req, 0, 0);
    if (!strstr(h, "\"ok\":true")) { fprintf(stderr, "hello refused: %s\n", h); exit(2); }
    free(h);
}

static void write_file(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die(path);
    write_all(fd, data, n);
    close(fd);
}

#endif
