/* Test trainers for rapha-enclave: one static binary, the behaviour chosen by argv[1].
 * "honest" is a real (tiny) trainer speaking protocol v1; every other mode is one attack
 * from the threat model. Built by the tests with `gcc -static`; never shipped. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <linux/bpf.h>
#include <math.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <linux/sockios.h>
#include <unistd.h>

#include "feed.h"

static void hello(void) { hello_as("test"); }

/* A valid safetensors file holding `n` bytes as one U8 tensor. */
static void write_safetensors(const char *path, const void *data, size_t n) {
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr,
        "{\"w\":{\"dtype\":\"U8\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}", n, n);
    while (hl % 8) hdr[hl++] = ' ';
    uint64_t len = (uint64_t)hl;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die(path);
    write_all(fd, &len, 8);
    write_all(fd, hdr, (size_t)hl);
    write_all(fd, data, n);
    close(fd);
}

static void write_weights(void) {
    float w[4] = {0.25f, -1.5f, 3.0f, 0.125f};
    write_safetensors("/out/model.safetensors", w, sizeof w);
}
static void write_metrics(void) {
    const char *m = "{\"epochs\":1,\"train_records\":10,\"loss\":0.5}";
    write_file("/out/metrics.json", m, strlen(m));
}

/* Exit code 3 means: the attack was blocked inside the sandbox (the trainer gives up). */
static int blocked(const char *what, long r) {
    printf("%s ret=%ld errno=%d (%s)\n", what, r, r < 0 ? errno : 0, r < 0 ? strerror(errno) : "ok");
    fflush(stdout);
    return r < 0 ? 3 : 0;
}

static double mean_of(const unsigned char *p, size_t n, int u16) {
    double s = 0;
    if (u16) { for (size_t i = 0; i + 1 < n; i += 2) s += p[i] | (p[i + 1] << 8); return n ? s / (n / 2) : 0; }
    for (size_t i = 0; i < n; i++) s += p[i];
    return n ? s / n : 0;
}

static int honest(void) {
    hello();
    enum { MAXR = 4096 };
    static int split_val[MAXR], label[MAXR];
    static double means[MAXR];
    int total = 0;
    for (int off = 0;; off += 1000) {
        char req[96];
        snprintf(req, sizeof req, "{\"op\":\"list\",\"offset\":%d,\"limit\":1000}", off);
        char *h = call(req, 0, 0);
        char *p = strstr(h, "\"total\":");
        int t = p ? atoi(p + 8) : 0;
        char *recs = strstr(h, "\"records\":");
        for (char *r = recs ? strstr(recs, "\"index\":") : 0; r; r = strstr(r + 1, "\"index\":")) {
            int i = atoi(r + 8);
            if (i < 0 || i >= MAXR) continue;
            char *next = strstr(r + 1, "\"index\":");
            char *sp = strstr(r, "\"split\":\"");
            char *lb = strstr(r, "\"label\":");
            split_val[i] = sp && (!next || sp < next) && sp[9] == 'v';
            label[i] = (lb && (!next || lb < next)) ? atoi(lb + 8) : -1;
            if (i + 1 > total) total = i + 1;
        }
        free(h);
        if (off + 1000 >= t) break;
    }
    for (int i = 0; i < total; i++) {
        char req[64];
        unsigned char *px; size_t n;
        snprintf(req, sizeof req, "{\"op\":\"fetch\",\"index\":%d}", i);
        char *h = call(req, &px, &n);
        means[i] = mean_of(px, n, strstr(h, "\"u16\"") != 0);
        free(h); free(px);
    }
    double s0 = 0, s1 = 0; int n0 = 0, n1 = 0;
    for (int i = 0; i < total; i++) {
        if (split_val[i]) continue;
        if (label[i] == 1) { s1 += means[i]; n1++; } else if (label[i] == 0) { s0 += means[i]; n0++; }
    }
    double m0 = n0 ? s0 / n0 : 0, m1 = n1 ? s1 / n1 : 1, thr = (m0 + m1) / 2, scale = fabs(m1 - m0) / 4 + 1e-9;
    char *req = malloc(64 + total * 48);
    int len = sprintf(req, "{\"op\":\"predict\",\"predictions\":[");
    int first = 1;
    for (int i = 0; i < total; i++) {
        if (!split_val[i]) continue;
        double z = (means[i] - thr) / scale * (m1 >= m0 ? 1 : -1);
        double score = 1 / (1 + exp(-z));
        len += sprintf(req + len, "%s{\"index\":%d,\"score\":%.6f}", first ? "" : ",", i, score);
        first = 0;
    }
    sprintf(req + len, "]}");
    char *h = call(req, 0, 0);
    if (!strstr(h, "\"ok\":true")) { fprintf(stderr, "predict refused: %s\n", h); return 2; }
    free(h);
    free(call("{\"op\":\"progress\",\"epoch\":1,\"loss\":0.42,\"metrics\":{\"accuracy\":0.99}}", 0, 0));
    free(call("{\"op\":\"done\"}", 0, 0));
    /* The declared tensor (tests/support.rs): 16 bytes named "w". */
    float w[4] = {(float)thr, (float)scale, 0.0f, 0.0f};
    write_safetensors("/out/model.safetensors", w, sizeof w);
    char m[128];
    snprintf(m, sizeof m, "{\"epochs\":1,\"train_records\":%d,\"accuracy\":0.99}", n0 + n1);
    write_file("/out/metrics.json", m, strlen(m));
    printf("honest trainer: %d records, threshold %.1f\n", total, thr);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "honest";
    const char *arg = argc > 2 ? argv[2] : "";
    setvbuf(stdout, 0, _IOLBF, 0);
    if (!strcmp(mode, "honest")) return honest();
    if (!strcmp(mode, "probe-indices")) {
        /* A trainer hunting for held-back records: it lists everything it is offered, then
         * asks for the record at every index from `arg` up to arg + 8 and predicts the first;
         * each answer's header goes to stdout for the test to read. */
        feed_connect();
        char *h = call("{\"op\":\"hello\",\"protocol\":1,\"trainer\":\"probe\"}", 0, 0);
        printf("hello %s\n", h); free(h);
        h = call("{\"op\":\"list\",\"offset\":0,\"limit\":1000}", 0, 0);
        printf("list %s\n", h); free(h);
        int from = atoi(arg);
        for (int i = from; i < from + 8; i++) {
            char req[64]; unsigned char *px = 0; size_t n = 0;
            snprintf(req, sizeof req, "{\"op\":\"fetch\",\"index\":%d}", i);
            h = call(req, &px, &n);
            printf("fetch %d %s\n", i, h); free(h); free(px);
        }
        char req[96];
        snprintf(req, sizeof req, "{\"op\":\"predict\",\"predictions\":[{\"index\":%d,\"score\":0.5}]}", from);
        h = call(req, 0, 0);
        printf("predict %d %s\n", from, h); free(h);
        write_weights(); write_metrics();
        return 0;
    }
    if (!strcmp(mode, "connect-host")) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(arg))};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return blocked("socket(AF_INET)", s);
        int r = connect(s, (struct sockaddr *)&a, sizeof a);
        if (r == 0) { write_all(s, "LEAK", 4); puts("connected to host listener"); }
        return blocked("connect(127.0.0.1)", r);
    }
    if (!strcmp(mode, "dns")) {
        int fd = open("/etc/resolv.conf", O_RDONLY);
        blocked("open(/etc/resolv.conf)", fd);
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (s < 0) return blocked("socket(AF_INET, DGRAM)", s);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
        inet_pton(AF_INET, "1.1.1.1", &a.sin_addr);
        unsigned char q[] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1};
        return blocked("sendto(1.1.1.1:53)", sendto(s, q, sizeof q, 0, (struct sockaddr *)&a, sizeof a));
    }
    if (!strcmp(mode, "read")) {
        int fd = open(arg, O_RDONLY);
        if (fd < 0) return blocked("open", fd);
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        printf("read %zd bytes of %s\n", n, arg);
        if (n > 0) write_safetensors("/out/model.safetensors", buf, (size_t)n);
        return 0;
    }
    if (!strcmp(mode, "proc1")) {
        char buf[4096] = {0};
        int fd = open("/proc/1/cmdline", O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        for (ssize_t i = 0; i < n; i++) if (!buf[i]) buf[i] = ' ';
        printf("pid1 cmdline: %s\n", n > 0 ? buf : "(unreadable)");
        fd = open("/proc/1/environ", O_RDONLY);
        n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        for (ssize_t i = 0; i < n; i++) if (!buf[i]) buf[i] = ' ';
        if (n > 0) buf[n] = 0;
        printf("pid1 environ: %s\n", n > 0 ? buf : "(unreadable)");
        char path[64];
        snprintf(path, sizeof path, "/proc/%s/environ", arg);
        return blocked("open(/proc/<host pid>/environ)", open(path, O_RDONLY));
    }
    if (!strcmp(mode, "exit")) { hello(); write_weights(); write_metrics(); return atoi(arg); }
    if (!strcmp(mode, "name")) { char p[512]; snprintf(p, sizeof p, "/out/%s", arg); write_weights(); write_safetensors(p, "abcd", 4); return 0; }
    if (!strcmp(mode, "renamed-dicom")) {
        unsigned char f[200] = {0};
        memcpy(f + 128, "DICM\x02\x00\x10\x00UI\x14\x00" "1.2.840.10008.1.2.1", 32);
        write_file("/out/model.safetensors", f, sizeof f);
        write_metrics();
        return 0;
    }
    if (!strcmp(mode, "raw-dataset")) {
        unsigned char f[] = "\x08\x00\x16\x00UI\x1a\x00" "1.2.840.10008.5.1.4.1.1.2\0" "\x08\x00\x60\x00" "CS\x02\x00" "CT";
        write_file("/out/model.safetensors", f, sizeof f - 1);
        write_metrics();
        return 0;
    }
    if (!strcmp(mode, "symlink")) { write_metrics(); return blocked("symlink", symlink("/etc/passwd", "/out/model.safetensors")); }
    if (!strcmp(mode, "hardlink")) { write_weights(); return blocked("link", link("/out/model.safetensors", "/out/metrics.json")); }
    if (!strcmp(mode, "fifo")) { write_metrics(); return blocked("mkfifo", mkfifo("/out/model.safetensors", 0644)); }
    if (!strcmp(mode, "over-cap")) {
        size_t n = (size_t)atol(arg);
        unsigned char *b = calloc(n, 1);
        for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(i * 7);
        write_safetensors("/out/model.safetensors", b, n);
        write_metrics();
        return 0;
    }
    if (!strcmp(mode, "memory")) {
        for (size_t total = 0;; total += 1 << 20) {
            char *p = malloc(1 << 20);
            if (!p) { printf("malloc failed after %zu MiB\n", total >> 20); return 3; }
            memset(p, 1, 1 << 20);
        }
    }
    if (!strcmp(mode, "fork-bomb")) {
        long failures = 0;
        for (;;) {
            pid_t p = fork();
            if (p < 0 && failures++ == 0) { printf("fork failed: %s\n", strerror(errno)); }
        }
    }
    if (!strcmp(mode, "never-exit")) { for (;;) pause(); }
    if (!strcmp(mode, "metrics-strings")) {
        write_weights();
        const char *m = "{\"accuracy\":0.9,\"loss\":\"see patient notes\"}";
        write_file("/out/metrics.json", m, strlen(m));
        return 0;
    }
    if (!strcmp(mode, "ident-weights")) { write_safetensors("/out/model.safetensors", arg, strlen(arg)); write_metrics(); return 0; }
    if (!strcmp(mode, "ident-stderr")) { write_weights(); write_metrics(); fprintf(stderr, "debug: %s\n", arg); return 0; }
    if (!strcmp(mode, "pixel-copy")) {
        hello();
        unsigned char *px; size_t n;
        free(call("{\"op\":\"fetch\",\"index\":0}", &px, &n));
        write_safetensors("/out/model.safetensors", px, n);
        write_metrics();
        return 0;
    }
    if (!strcmp(mode, "syscall")) {
        char st[4096] = {0};
        int fd = open("/proc/self/status", O_RDONLY);
        if (fd >= 0 && read(fd, st, sizeof st - 1) > 0) { char *s = strstr(st, "Seccomp:"); if (s) { char *e = strchr(s, '\n'); if (e) *e = 0; puts(s); } }
        if (!strcmp(arg, "keyctl")) return blocked("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 1));
        if (!strcmp(arg, "add_key")) return blocked("add_key", syscall(SYS_add_key, "user", "rapha", "x", 1, -3));
        if (!strcmp(arg, "io_uring_setup")) { unsigned char params[120] = {0}; return blocked("io_uring_setup", syscall(SYS_io_uring_setup, 4, params)); }
        if (!strcmp(arg, "bpf")) { union bpf_attr at; memset(&at, 0, sizeof at); at.map_type = BPF_MAP_TYPE_ARRAY; at.key_size = 4; at.value_size = 4; at.max_entries = 1; return blocked("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &at, sizeof at)); }
        if (!strcmp(arg, "perf_event_open")) { struct perf_event_attr pa; memset(&pa, 0, sizeof pa); pa.type = PERF_TYPE_SOFTWARE; pa.size = sizeof pa; pa.config = PERF_COUNT_SW_TASK_CLOCK; pa.exclude_kernel = 1; return blocked("perf_event_open", syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0)); }
        if (!strcmp(arg, "ptrace")) return blocked("ptrace", syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0));
        if (!strcmp(arg, "unshare")) return blocked("unshare", syscall(SYS_unshare, 0x10000000 /* CLONE_NEWUSER */));
        fprintf(stderr, "unknown syscall %s\n", arg);
        return 2;
    }
    if (!strcmp(mode, "wedge")) {
        /* Fills the node's answer path (lone fetches a few ms apart, never read, so none is
         * pipelined), passes its own end of the feed connection to the node (SCM_RIGHTS) and
         * exits 0 with valid outputs: the socket then lives on only in the node's receive
         * queue, behind requests the node no longer reads. */
        hello();
        /* Until the node stops reading: then the requests it has not read pile up in this
         * socket's send queue (SIOCOUTQ), which must keep room for the message below. */
        int n = atoi(arg), unread = 0;
        for (int i = 0; i < n && unread < 16384; i++) {
            const char *req = "{\"op\":\"fetch\",\"index\":0}";
            uint32_t len = (uint32_t)strlen(req);
            write_all(feed, &len, 4);
            write_all(feed, req, len);
            usleep(2000);
            if (ioctl(feed, SIOCOUTQ, &unread) < 0) die("ioctl(SIOCOUTQ)");
        }
        if (unread < 16384) { fprintf(stderr, "the node kept reading\n"); return 2; }
        printf("the node stopped reading with %d bytes of requests unread\n", unread);
        char x = 'x';
        struct iovec io = {.iov_base = &x, .iov_len = 1};
        union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } c;
        memset(&c, 0, sizeof c);
        struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof c.buf};
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &feed, sizeof(int));
        if (sendmsg(feed, &m, 0) != 1) die("sendmsg(SCM_RIGHTS)");
        write_weights();
        write_metrics();
        puts("passed the feed socket to the node");
        return 0;
    }
    if (!strcmp(mode, "core-dump")) {
        hello();
        unsigned char *px; size_t n;
        free(call("{\"op\":\"fetch\",\"index\":0}", &px, &n));
        struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
        blocked("setrlimit(RLIMIT_CORE, unlimited)", setrlimit(RLIMIT_CORE, &rl));
        struct rlimit now; getrlimit(RLIMIT_CORE, &now);
        printf("core limit soft=%lu hard=%lu, %zu pixel bytes in memory\n", (unsigned long)now.rlim_cur, (unsigned long)now.rlim_max, n);
        fflush(stdout);
        /* A fault: pid 1 of a PID namespace ignores its own abort(), a fault is forced. */
        *(volatile int *)0 = 1;
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
