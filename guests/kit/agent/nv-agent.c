/*
 * nv-agent: runs one command for `nodevisor run -- COMMAND`, inside the guest.
 *
 * It talks to nodevisor over a byte channel (the guest's /dev/hvc0, a virtio-console port) in
 * frames: type (1 byte), payload length (4 bytes, little-endian), payload. The frame types and
 * their meaning are defined in src/runner/protocol.ts; this file mirrors them.
 *   agent -> host: HELLO "nv-agent 1", STDOUT bytes, STDERR bytes, EXIT status (int32 LE:
 *                  the exit code, or 128 + signal)
 *   host -> agent: RUN "cwd\0arg0\0arg1\0...", STDIN bytes, STDIN_EOF
 * The command's stdout and stderr are forwarded as they come (in order within each stream); its
 * stdin is fed from STDIN frames without ever blocking the agent (a command that does not read
 * its input cannot stall its output), and at most about PEND_LIMIT of it waits here.
 *
 * Usage: nv-agent DEVICE | nv-agent --fd N | nv-agent --fds IN OUT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

enum { F_HELLO = 1, F_RUN = 2, F_STDIN = 3, F_STDIN_EOF = 4, F_STDOUT = 5, F_STDERR = 6, F_EXIT = 7 };
#define MAX_PAYLOAD (1u << 20) /* frames from the host are at most this long */
/* Past this much stdin the command has not taken, the agent stops reading the channel: the host
 * then holds the rest (and pauses its own stdin), instead of the guest's memory filling up. */
#define PEND_LIMIT (1u << 20)
#define CHUNK 65536

static int chan = -1;     /* host -> agent (and agent -> host unless chan_out is set) */
static int chan_out = -1; /* agent -> host, when the channel is two one-way fds */

static void die(const char *what) {
  fprintf(stderr, "nv-agent: %s: %s\n", what, strerror(errno));
  exit(125);
}

static void write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      struct pollfd pf = {fd, POLLOUT, 0};
      poll(&pf, 1, -1);
      continue;
    }
    if (n <= 0) die("write to the host channel");
    p += n;
    len -= (size_t)n;
  }
}

static void send_frame(int type, const void *payload, uint32_t len) {
  unsigned char h[5] = {(unsigned char)type, len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, (len >> 24) & 0xff};
  int fd = chan_out >= 0 ? chan_out : chan;
  write_all(fd, h, sizeof h);
  if (len) write_all(fd, payload, len);
}

/* Incoming frames are assembled here as bytes arrive. */
static unsigned char in_buf[5 + MAX_PAYLOAD];
static size_t in_len;

/* Returns 1 and fills type, payload and len when a whole frame is buffered; consume_frame() drops it. */
static int next_frame(int *type, unsigned char **payload, uint32_t *len) {
  if (in_len < 5) return 0;
  uint32_t l = in_buf[1] | (in_buf[2] << 8) | (in_buf[3] << 16) | ((uint32_t)in_buf[4] << 24);
  if (l > MAX_PAYLOAD) {
    fprintf(stderr, "nv-agent: frame of %u bytes from the host is too long\n", l);
    exit(125);
  }
  if (in_len < 5 + l) return 0;
  *type = in_buf[0];
  *payload = in_buf + 5;
  *len = l;
  return 1;
}

static void consume_frame(uint32_t len) {
  memmove(in_buf, in_buf + 5 + len, in_len - 5 - len);
  in_len -= 5 + len;
}

/* Reads what the channel has; returns 0 at end of file. */
static int fill(void) {
  ssize_t n = read(chan, in_buf + in_len, sizeof in_buf - in_len);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
  if (n < 0) die("read from the host channel");
  in_len += (size_t)n;
  return n > 0;
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Bytes for the command's stdin that its pipe has not taken yet. */
static unsigned char *pend;
static size_t pend_len, pend_cap;
static int stdin_eof;
static int chan_eof; /* the host closed the channel */

static void queue_stdin(const unsigned char *p, uint32_t len) {
  if (pend_len + len > pend_cap) {
    pend_cap = (pend_len + len) * 2;
    pend = realloc(pend, pend_cap);
    if (!pend) die("realloc");
  }
  memcpy(pend + pend_len, p, len);
  pend_len += len;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--fd") == 0) chan = atoi(argv[2]);
  else if (argc == 4 && strcmp(argv[1], "--fds") == 0) {
    chan = atoi(argv[2]);
    chan_out = atoi(argv[3]);
  } else if (argc == 2) chan = open(argv[1], O_RDWR | O_NOCTTY | O_CLOEXEC);
  else {
    fprintf(stderr, "usage: nv-agent DEVICE | nv-agent --fd N | nv-agent --fds IN OUT\n");
    return 2;
  }
  if (chan < 0) die(argv[1]);
  struct termios t;
  if (tcgetattr(chan, &t) == 0) { /* a console: no echo, no line discipline, 8-bit clean */
    cfmakeraw(&t);
    tcsetattr(chan, TCSANOW, &t);
  }
  signal(SIGPIPE, SIG_IGN);
  const char hello[] = "nv-agent 1";
  send_frame(F_HELLO, hello, sizeof hello - 1);

  /* Wait for RUN. */
  int type = 0;
  unsigned char *payload;
  uint32_t len;
  for (;;) {
    while (!next_frame(&type, &payload, &len))
      if (!fill()) return 0; /* the host went away before asking for anything */
    if (type == F_RUN) break;
    if (type == F_STDIN) queue_stdin(payload, len);
    if (type == F_STDIN_EOF) stdin_eof = 1;
    consume_frame(len);
  }
  if (len == 0 || payload[len - 1] != 0) {
    fprintf(stderr, "nv-agent: malformed RUN frame\n");
    return 125;
  }
  /* cwd\0arg0\0arg1\0... */
  char *cwd = (char *)payload;
  char *args[256];
  int n = 0;
  for (char *p = cwd + strlen(cwd) + 1; p < (char *)payload + len && n < 255; p += strlen(p) + 1) args[n++] = p;
  args[n] = NULL;
  if (n == 0) {
    fprintf(stderr, "nv-agent: RUN without a command\n");
    return 125;
  }

  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    signal(SIGPIPE, SIG_DFL);
    if (*cwd && chdir(cwd) != 0) {
      fprintf(stderr, "nv-agent: cd %s: %s\n", cwd, strerror(errno));
      _exit(126);
    }
    execvp(args[0], args);
    fprintf(stderr, "nv-agent: %s: %s\n", args[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  int to_child = in[1];
  set_nonblock(to_child);
  consume_frame(len);
  int out_open = 1, err_open = 1;
  static unsigned char buf[CHUNK];

  while (out_open || err_open) {
    /* Frames already buffered (STDIN, STDIN_EOF) are handled before waiting again. */
    while (next_frame(&type, &payload, &len)) {
      if (type == F_STDIN && !stdin_eof && to_child >= 0) queue_stdin(payload, len); /* else nobody reads it */
      if (type == F_STDIN_EOF) stdin_eof = 1;
      consume_frame(len);
    }
    if (to_child >= 0 && pend_len > 0) {
      ssize_t w = write(to_child, pend, pend_len);
      if (w > 0) {
        memmove(pend, pend + w, pend_len - (size_t)w);
        pend_len -= (size_t)w;
      } else if (w < 0 && errno == EPIPE) {
        pend_len = 0; /* the command closed its stdin: drop the rest */
        close(to_child);
        to_child = -1;
      }
    }
    if (to_child >= 0 && stdin_eof && pend_len == 0) {
      close(to_child);
      to_child = -1;
    }
    struct pollfd pf[4];
    int np = 0, ichan = -1, iout = -1, ierr = -1, ichild = -1;
    if (!chan_eof && in_len < sizeof in_buf && pend_len < PEND_LIMIT) { ichan = np; pf[np++] = (struct pollfd){chan, POLLIN, 0}; }
    if (out_open) { iout = np; pf[np++] = (struct pollfd){out[0], POLLIN, 0}; }
    if (err_open) { ierr = np; pf[np++] = (struct pollfd){err[0], POLLIN, 0}; }
    if (to_child >= 0 && pend_len > 0) { ichild = np; pf[np++] = (struct pollfd){to_child, POLLOUT, 0}; }
    if (poll(pf, (nfds_t)np, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (ichan >= 0 && pf[ichan].revents) {
      if (!fill()) stdin_eof = chan_eof = 1; /* the host closed the channel: no more input */
    }
    int fds[2] = {iout, ierr};
    for (int k = 0; k < 2; k++) {
      if (fds[k] < 0 || !pf[fds[k]].revents) continue;
      int fd = k == 0 ? out[0] : err[0];
      ssize_t r = read(fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        if (k == 0) out_open = 0; else err_open = 0;
        continue;
      }
      send_frame(k == 0 ? F_STDOUT : F_STDERR, buf, (uint32_t)r);
    }
    (void)ichild;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  int32_t code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 125;
  unsigned char le[4] = {code & 0xff, (code >> 8) & 0xff, (code >> 16) & 0xff, ((uint32_t)code >> 24) & 0xff};
  send_frame(F_EXIT, le, 4);
  return 0;
}
