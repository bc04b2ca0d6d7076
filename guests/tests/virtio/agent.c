/*
 * agent: nodevisor's command-runner protocol (src/runner/protocol.ts; the Linux agent is
 * guests/kit/agent/nv-agent.c) spoken on a virtio-console port, with built-in commands instead of
 * processes. Frames: type (u8), payload length (u32 LE), payload.
 *   agent -> host: HELLO "nv-agent 1" first; STDOUT, STDERR; EXIT (i32 LE status)
 *   host -> agent: RUN "cwd\0arg0\0arg1\0..."; STDIN bytes; STDIN_EOF
 * Commands:
 *   exit N        EXIT N
 *   emit N        N bytes on STDOUT: the lines "1\n2\n3\n..." (as seq prints them) cut at N bytes
 *   echo ARGS...  ARGS joined by spaces and a newline on STDOUT
 *   stderr ARGS.. the same on STDERR
 *   cat           STDIN copied to STDOUT until STDIN_EOF
 * anything else: "nv-agent: NAME: command not found" on STDERR and EXIT 127. Output frames carry at
 * most 64 KiB. After EXIT the guest powers off through ACPI (or, where that fails, exits 0), once
 * the host has taken all its output, or at once with the word "noflush" on the command line.
 * The port is the last virtio-console function: nodevisor adds the agent's after the console's.
 */
#include "scenarios.h"

enum { F_HELLO = 1, F_RUN = 2, F_STDIN = 3, F_STDIN_EOF = 4, F_STDOUT = 5, F_STDERR = 6, F_EXIT = 7 };
#define MAX_RUN 65536      /* the longest RUN payload accepted */
#define MAX_ARGS 64
#define OUT_FRAME 65536    /* output frames carry at most this much */

static int send_frame(u8 type, const void *payload, u32 len) {
  u8 h[5] = {type, (u8)len, (u8)(len >> 8), (u8)(len >> 16), (u8)(len >> 24)};
  int r = port_write(h, sizeof h);
  return r ? r : len ? port_write(payload, len) : 0;
}

/* ---------------- input: frames out of the byte stream ---------------- */

static u8 *chunk;
static u32 chunk_len, chunk_at;

/* Up to `max` bytes of input, contiguous, without copying; waits for the host when none is left. */
static int pull(u8 **p, u32 max, u32 *n) {
  if (chunk_at == chunk_len) {
    port_release();
    chunk_at = chunk_len = 0;
    int r = port_read(&chunk, &chunk_len);
    if (r) return r;
  }
  *n = chunk_len - chunk_at < max ? chunk_len - chunk_at : max;
  *p = chunk + chunk_at;
  chunk_at += *n;
  return 0;
}

static int read_exact(u8 *dst, u32 len) {
  while (len) {
    u8 *p;
    u32 n;
    int r = pull(&p, len, &n);
    if (r) return r;
    memcpy(dst, p, n);
    dst += n, len -= n;
  }
  return 0;
}

static int read_header(u8 *type, u32 *len) {
  u8 h[5];
  int r = read_exact(h, sizeof h);
  *type = h[0];
  *len = h[1] | (u32)h[2] << 8 | (u32)h[3] << 16 | (u32)h[4] << 24;
  return r;
}

/* Passes a payload of `len` bytes to fn piece by piece (fn may be NULL: skipped). */
static int each_piece(u32 len, int (*fn)(const u8 *p, u32 n)) {
  while (len) {
    u8 *p;
    u32 n;
    int r = pull(&p, len, &n);
    if (r) return r;
    if (fn && (r = fn(p, n))) return r;
    len -= n;
  }
  return 0;
}

/* ---------------- output: a stream cut into frames ---------------- */

static u8 out_buf[OUT_FRAME];
static u32 out_len;
static u8 out_type;

static int out_flush(void) {
  int r = out_len ? send_frame(out_type, out_buf, out_len) : 0;
  out_len = 0;
  return r;
}

static int out_put(u8 type, const void *data, u32 len) {
  const u8 *p = data;
  if (type != out_type && out_len) {
    int r = out_flush();
    if (r) return r;
  }
  out_type = type;
  while (len) {
    u32 n = OUT_FRAME - out_len < len ? OUT_FRAME - out_len : len;
    memcpy(out_buf + out_len, p, n);
    out_len += n, p += n, len -= n;
    if (out_len == OUT_FRAME) {
      int r = out_flush();
      if (r) return r;
    }
  }
  return 0;
}

/* ---------------- commands ---------------- */

static int parse_i32(const char *s, int *v) {
  int neg = *s == '-', n = 0;
  if (neg) s++;
  if (!*s) return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    n = n * 10 + (*s - '0');
  }
  *v = neg ? -n : n;
  return 0;
}

static int parse_u64(const char *s, u64 *v) {
  if (!*s) return -1;
  for (*v = 0; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    *v = *v * 10 + (u64)(*s - '0');
  }
  return 0;
}

/* "1\n2\n3\n..." cut at exactly n bytes. */
static int cmd_emit(u64 n) {
  char line[24];
  for (u64 i = 1, sent = 0; sent < n; i++) {
    int k = 0;
    char rev[20];
    u64 v = i;
    do rev[k++] = '0' + v % 10, v /= 10; while (v);
    for (int j = 0; j < k; j++) line[j] = rev[k - 1 - j];
    line[k++] = '\n';
    u32 take = n - sent < (u64)k ? (u32)(n - sent) : (u32)k;
    int r = out_put(F_STDOUT, line, take);
    if (r) return r;
    sent += take;
  }
  return out_flush();
}

/* args joined by spaces, and a newline, on `type`. */
static int cmd_echo(u8 type, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    int r = (i > 1 ? out_put(type, " ", 1) : 0);
    if (r || (r = out_put(type, argv[i], strlen(argv[i])))) return r;
  }
  int r = out_put(type, "\n", 1);
  return r ? r : out_flush();
}

static int forward_stdin(const u8 *p, u32 n) { return send_frame(F_STDOUT, p, n); }

/* STDIN frames to STDOUT until STDIN_EOF (already seen if it came before RUN's end). */
static int cmd_cat(int eof) {
  while (!eof) {
    u8 type;
    u32 len;
    int r = read_header(&type, &len);
    if (r) return r;
    if ((r = each_piece(len, type == F_STDIN ? forward_stdin : NULL))) return r;
    eof = type == F_STDIN_EOF;
  }
  return 0;
}

/* Runs argv; sets *status to the command's exit status. Returns <0 when the channel failed. */
static int run(int argc, char **argv, int stdin_eof, int *status) {
  const char *c = argv[0];
  u64 n;
  *status = 0;
  if (!strcmp(c, "exit") && argc == 2 && !parse_i32(argv[1], status)) return 0;
  if (!strcmp(c, "emit") && argc == 2 && !parse_u64(argv[1], &n)) return cmd_emit(n);
  if (!strcmp(c, "echo")) return cmd_echo(F_STDOUT, argc, argv);
  if (!strcmp(c, "stderr")) return cmd_echo(F_STDERR, argc, argv);
  if (!strcmp(c, "cat") && argc == 1) return cmd_cat(stdin_eof);
  static const char msg[] = ": command not found (built-ins: exit N, emit N, echo, stderr, cat)\n";
  *status = 127;
  int r = out_put(F_STDERR, "nv-agent: ", 10);
  if (!r) r = out_put(F_STDERR, c, strlen(c));
  if (!r) r = out_put(F_STDERR, msg, sizeof msg - 1);
  return r ? r : out_flush();
}

/* ---------------- the session ---------------- */

static char run_buf[MAX_RUN + 1];

/* Waits for RUN (STDIN before it is dropped: the host sends RUN first); splits its payload. */
static int read_run(int *argc, char **argv, int *stdin_eof) {
  u8 type;
  u32 len;
  for (;;) {
    int r = read_header(&type, &len);
    if (r) return r;
    if (type == F_RUN) break;
    if (type == F_STDIN_EOF) *stdin_eof = 1;
    if ((r = each_piece(len, NULL))) return r;
  }
  if (len == 0 || len > MAX_RUN) return VIRTIO_EINVAL;
  int r = read_exact((u8 *)run_buf, len);
  if (r) return r;
  if (run_buf[len - 1]) return VIRTIO_EINVAL; /* must end with a NUL */
  run_buf[len] = 0;
  char *p = run_buf + strlen(run_buf) + 1; /* skip cwd: there are no directories here */
  for (*argc = 0; p < run_buf + len && *argc < MAX_ARGS; p += strlen(p) + 1) argv[(*argc)++] = p;
  return *argc ? 0 : VIRTIO_EINVAL;
}

int scenario_agent(void) {
  int r = port_open("agent", 1);
  if (r) return fail(r == VIRTIO_ENODEV ? 2 : 80, "agent", "%s", virtio_strerror(r));
  printf("agent: on the virtio-console at 00:%02x.0\n", port_device()->slot);
  static const char hello[] = "nv-agent 1";
  if ((r = send_frame(F_HELLO, hello, sizeof hello - 1))) return fail(81, "agent", "HELLO: %s", virtio_strerror(r));
  int argc = 0, stdin_eof = 0, status;
  char *argv[MAX_ARGS];
  if ((r = read_run(&argc, argv, &stdin_eof))) return fail(82, "agent", "RUN: %s", virtio_strerror(r));
  printf("agent: run %s (%d argument%s)\n", argv[0], argc - 1, argc == 2 ? "" : "s");
  if ((r = run(argc, argv, stdin_eof, &status))) return fail(83, "agent", "%s: %s", argv[0], virtio_strerror(r));
  u8 le[4] = {(u8)status, (u8)(status >> 8), (u8)(status >> 16), (u8)((u32)status >> 24)};
  /* With "noflush" the guest powers off as soon as EXIT is queued, as Linux's nv-agent and init do:
   * a generic port's write() returns once the buffer is in the ring, taken by the host or not. */
  if ((r = send_frame(F_EXIT, le, 4)) || (!cmdline_has("noflush") && (r = port_flush()))) return fail(84, "agent", "EXIT: %s", virtio_strerror(r));
  printf("agent: exit status %d sent, powering off\n", status);
  acpi_poweroff();
  return 0; /* no XSDT to find the sleep register in (QEMU's pc machine): exit via isa-debug-exit */
}
