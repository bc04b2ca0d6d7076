/* nodevisor's freestanding C runtime: console, printf, string functions, exit. */
#include "nv.h"

#define COM1 0x3f8
#define COM1_LSR 0x3fd
#define DEBUG_EXIT 0xf4

extern u64 nv_start_info_addr;

struct hvm_start_info *nv_start_info(void) { return (struct hvm_start_info *)nv_start_info_addr; }

int nv_quiet;

void putchar(int c) {
  if (nv_quiet) return;
  while (!(inb(COM1_LSR) & 0x20)) cpu_relax();
  outb(COM1, (u8)c);
}

int puts(const char *s) {
  while (*s) putchar(*s++);
  putchar('\n');
  return 0;
}

void exit(int code) {
  outb(DEBUG_EXIT, (u8)code);
  for (;;) __asm__ volatile("cli; hlt");
}

void *memset(void *d, int c, size_t n) {
  u8 *p = d;
  while (n--) *p++ = (u8)c;
  return d;
}

void *memcpy(void *d, const void *s, size_t n) {
  u8 *p = d;
  const u8 *q = s;
  while (n--) *p++ = *q++;
  return d;
}

int memcmp(const void *a, const void *b, size_t n) {
  const u8 *p = a, *q = b;
  for (; n; n--, p++, q++)
    if (*p != *q) return *p - *q;
  return 0;
}

size_t strlen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

int strcmp(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return (u8)*a - (u8)*b;
}

/* Prints v in `base`, at least `width` digits padded with `pad`. */
static void print_num(u64 v, unsigned base, int width, char pad, int upper) {
  char buf[24];
  int i = 0;
  const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  do {
    buf[i++] = digits[v % base];
    v /= base;
  } while (v);
  while (i < width) buf[i++] = pad;
  while (i) putchar(buf[--i]);
}

/* Supports %d %i %u %x %X %p %s %c %%, the l and ll modifiers, a width and 0-padding, and a
 * precision for %s (%.5s, %.*s) so that strings that are not NUL-terminated (a 9P string, a
 * device's mount tag) can be printed from their length. */
int vprintf(const char *fmt, __builtin_va_list ap) {
  for (const char *f = fmt; *f; f++) {
    if (*f != '%') {
      putchar(*f);
      continue;
    }
    f++;
    char pad = ' ';
    int width = 0, lng = 0;
    if (*f == '0') {
      pad = '0';
      f++;
    }
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    int prec = -1;
    if (*f == '.') {
      f++;
      prec = 0;
      if (*f == '*') {
        prec = __builtin_va_arg(ap, int);
        f++;
      } else {
        while (*f >= '0' && *f <= '9') prec = prec * 10 + (*f++ - '0');
      }
    }
    while (*f == 'l') {
      lng++;
      f++;
    }
    switch (*f) {
      case 'd':
      case 'i': {
        i64 v = lng ? __builtin_va_arg(ap, i64) : __builtin_va_arg(ap, int);
        if (v < 0) {
          putchar('-');
          v = -v;
        }
        print_num((u64)v, 10, width, pad, 0);
        break;
      }
      case 'u':
        print_num(lng ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, unsigned), 10, width, pad, 0);
        break;
      case 'x':
      case 'X':
        print_num(lng ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, unsigned), 16, width, pad, *f == 'X');
        break;
      case 'p':
        putchar('0');
        putchar('x');
        print_num((u64)__builtin_va_arg(ap, void *), 16, width, pad, 0);
        break;
      case 's': {
        const char *s = __builtin_va_arg(ap, const char *);
        if (!s) s = "(null)";
        int n = 0;
        while (s[n] && (prec < 0 || n < prec)) n++; /* never reads past the precision */
        for (int k = n; k < width; k++) putchar(' ');
        for (int k = 0; k < n; k++) putchar(s[k]);
        break;
      }
      case 'c':
        putchar(__builtin_va_arg(ap, int));
        break;
      case '%':
        putchar('%');
        break;
      default:
        putchar('%');
        if (*f) putchar(*f);
        else f--;
    }
  }
  return 0;
}

int printf(const char *fmt, ...) {
  __builtin_va_list ap;
  __builtin_va_start(ap, fmt);
  vprintf(fmt, ap);
  __builtin_va_end(ap);
  return 0;
}
