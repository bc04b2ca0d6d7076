/*
 * A small driver library for modern virtio PCI devices (virtio 1.2 §4.1, split virtqueues §2.7),
 * for the test guests: find a function on bus 0, map its capabilities from whichever BAR they
 * name, negotiate features, set up split queues with MSI-X delivered to this CPU's LAPIC, submit
 * descriptor chains and wait for their completion with a deadline (never forever).
 *
 * Typical use:
 *   struct vdev d;
 *   virtio_find(VIRTIO_ID_BLOCK, 0, &d);
 *   virtio_start(&d, wanted_features);       reset, ACKNOWLEDGE|DRIVER, features, FEATURES_OK, MSI-X
 *   virtio_queue_setup(&d, 0, 128);           ring memory from the library's pool
 *   virtio_driver_ok(&d);
 *   vq_add(&d.vq[0], bufs, n, token); vq_kick(&d.vq[0]); vq_wait(&d, &d.vq[0], ms, &len, &token);
 *
 * Every call that can fail returns 0 or a negative VIRTIO_E* code; virtio_strerror() names it.
 * Buffers are guest-physical addresses: the runtime identity-maps the first 4 GiB.
 */
#ifndef NV_VIRTIO_H
#define NV_VIRTIO_H
#include "machine.h"

/* Device types (§5). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_9P 9

/* Reserved feature bits (§6). */
#define VIRTIO_F_VERSION_1 (1ul << 32)

/* Device status bits (§2.1). */
#define VIRTIO_S_ACKNOWLEDGE 1
#define VIRTIO_S_DRIVER 2
#define VIRTIO_S_DRIVER_OK 4
#define VIRTIO_S_FEATURES_OK 8
#define VIRTIO_S_NEEDS_RESET 0x40
#define VIRTIO_S_FAILED 0x80

#define VIRTIO_NO_VECTOR 0xffff

/* Errors. */
#define VIRTIO_ENODEV (-1)       /* no such device, or its capabilities are unusable */
#define VIRTIO_ETIMEDOUT (-2)    /* the device did not answer before the deadline */
#define VIRTIO_ENEEDSRESET (-3)  /* the device set DEVICE_NEEDS_RESET */
#define VIRTIO_EFULL (-4)        /* not enough free descriptors */
#define VIRTIO_EDEVICE (-5)      /* the device returned something impossible (bad id, length, index) */
#define VIRTIO_ENOVERSION1 (-6)  /* VERSION_1 not offered: not a modern device */
#define VIRTIO_EFEATURES (-7)    /* FEATURES_OK did not stick */
#define VIRTIO_ENOQUEUE (-8)     /* the queue does not exist (size 0) */
#define VIRTIO_EVECTOR (-9)      /* the device refused an MSI-X vector */
#define VIRTIO_ENOMEM (-10)      /* the ring pool is exhausted */
#define VIRTIO_EINVAL (-11)      /* a bad argument (queue index, empty chain) */
#define VIRTIO_EBAR (-12)        /* a capability's BAR is unassigned, I/O space, or above 4 GiB */
const char *virtio_strerror(int err);

/* The largest queue this library sets up, and how many queues of one device it keeps. */
#define VQ_MAX_SIZE 256
#define VIRTIO_MAX_QUEUES 4

struct vq_desc { u64 addr; u32 len; u16 flags, next; };
#define VQ_DESC_F_NEXT 1
#define VQ_DESC_F_WRITE 2
struct vq_avail { u16 flags, idx, ring[]; };
#define VQ_AVAIL_F_NO_INTERRUPT 1
struct vq_used_elem { u32 id, len; };
struct vq_used { u16 flags, idx; struct vq_used_elem ring[]; };
#define VQ_USED_F_NO_NOTIFY 1

struct virtq {
  u16 index, size;
  u8 enabled;
  struct vq_desc *desc;
  volatile struct vq_avail *avail;
  volatile struct vq_used *used;
  u64 notify;          /* this queue's notification register */
  u16 free_head, num_free;
  u16 avail_idx;       /* the driver's copy of avail->idx */
  u16 last_used;       /* the next used ring slot to consume */
  u16 chains;          /* chains in flight */
  u16 msix;            /* MSI-X table entry, or VIRTIO_NO_VECTOR */
  u8 vector;           /* IDT vector the entry delivers to (0: none) */
  u32 kicks;           /* notifications written (vq_kick calls the device did not turn away) */
  /* Per in-flight chain, indexed by its head: what the driver gets back, how much the device may
   * write (used.len is checked against it), and the chain's extent (0 descriptors: not in flight). */
  void *token[VQ_MAX_SIZE];
  u32 wlen[VQ_MAX_SIZE];
  u16 ndesc[VQ_MAX_SIZE];
  u16 tail[VQ_MAX_SIZE];
};

struct vdev {
  u8 slot;
  u16 type;            /* virtio device type (VIRTIO_ID_*) */
  u64 common, isr, devcfg, notify;
  u32 devcfg_len, notify_len, notify_mult;
  u8 msix_cap;         /* config-space offset of the MSI-X capability (0: none) */
  u64 msix_table;
  u16 msix_entries;
  u64 offered;         /* the device's feature bits */
  u64 features;        /* what was negotiated */
  u16 num_queues;      /* as the device reports */
  u16 cfg_msix;
  u8 cfg_vector;       /* IDT vector for configuration changes (0: none) */
  u8 entry_vector[VIRTIO_MAX_QUEUES + 1]; /* IDT vector of each MSI-X entry in use (0: none yet) */
  struct virtq vq[VIRTIO_MAX_QUEUES];
};

/* A buffer of a chain: device-readable unless `write`. */
struct vbuf { u64 addr; u32 len; u8 write; };

/* Finds the nth (0-based) function of virtio type `type` on bus 0 and maps its capabilities. */
int virtio_find(u16 type, int nth, struct vdev *d);
/* How many functions of that type bus 0 holds. */
int virtio_count(u16 type);

/* Resets the device and negotiates: accepts offered & (wanted | VERSION_1). Enables MSI-X (when
 * the function has it) and routes the configuration-change vector to this CPU. */
int virtio_start(struct vdev *d, u64 wanted);
/* Sets up queue `index` with at most `size` entries (clamped to the device's maximum, rounded down
 * to a power of two) and enables it. Rings come from the library's pool and are reused when the
 * same queue is set up again after a reset. */
int virtio_queue_setup(struct vdev *d, u16 index, u16 size);
/* Sets DRIVER_OK; fails if the device then says it needs a reset. */
int virtio_driver_ok(struct vdev *d);
/* Writes 0 to device_status and waits (bounded) until it reads 0. */
int virtio_reset(struct vdev *d);
u8 virtio_status(struct vdev *d);

/* Device configuration space reads (§4.1.3.1: each field with an access of its own width; 64-bit
 * fields as two 32-bit reads, retried until config_generation is stable). Offsets are checked
 * against the capability's length: out of range reads return all ones. */
u8 virtio_cfg8(struct vdev *d, u32 off);
u16 virtio_cfg16(struct vdev *d, u32 off);
u32 virtio_cfg32(struct vdev *d, u32 off);
u64 virtio_cfg64(struct vdev *d, u32 off);

/* Interrupts counted so far on the configuration vector and on a queue's vector. */
u32 virtio_cfg_irqs(struct vdev *d);
u32 vq_irqs(struct virtq *q);
/* Asks the device not to interrupt for this queue (a hint, §2.7.7): for polled bulk transfers. */
void vq_interrupts(struct virtq *q, int on);

/* Publishes a chain of `n` buffers; returns its head, or VIRTIO_EFULL / VIRTIO_EINVAL. */
int vq_add(struct virtq *q, const struct vbuf *bufs, int n, void *token);
/* Notifies the device of new chains (unless it asked not to be, VQ_USED_F_NO_NOTIFY). */
void vq_kick(struct virtq *q);
/* Takes one used chain, if any: returns 1 with its used length and token, 0 when none, or
 * VIRTIO_EDEVICE when the device's entry is impossible. */
int vq_get(struct virtq *q, u32 *len, void **token);
/* Waits up to `ms` for one used chain: 0 with len and token, or VIRTIO_ETIMEDOUT /
 * VIRTIO_ENEEDSRESET / VIRTIO_EDEVICE. len and token may be NULL. */
int vq_wait(struct vdev *d, struct virtq *q, u32 ms, u32 *len, void **token);
/* vq_add + vq_kick + vq_wait for that very chain (the queue must have nothing else in flight). */
int vq_call(struct vdev *d, struct virtq *q, const struct vbuf *bufs, int n, u32 ms, u32 *len);
/* Chains published and not yet returned. */
static inline u16 vq_in_flight(struct virtq *q) { return q->chains; }
/* Waits up to `ms` for `counter` to reach `target` (an interrupt count); 0 or VIRTIO_ETIMEDOUT. */
int virtio_wait_count(volatile u32 *counter, u32 target, u32 ms);
volatile u32 *virtio_cfg_irq_counter(struct vdev *d);
volatile u32 *vq_irq_counter(struct virtq *q);

/* A bump allocator over a static pool (rings use it; scenarios may too). Never freed. */
void *virtio_alloc(size_t size, size_t align);

#endif
