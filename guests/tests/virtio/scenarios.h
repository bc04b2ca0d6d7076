/*
 * c-virtio's scenarios (one file each in this folder) and the helpers they share (c-virtio.c).
 * Exit codes: 0 pass; 2 no device of the kind the scenario needs; 3 no scenario word on the
 * command line; each scenario owns a range (listed in c-virtio.c); 125 a CPU exception.
 */
#ifndef NV_VIRTIO_SCENARIOS_H
#define NV_VIRTIO_SCENARIOS_H
#include "virtio.h"

/* How long one request may take before the guest gives up (TCG is slow; KVM is not). */
#define REQUEST_MS 10000

int scenario_blk(void);
int scenario_blk_broken(void);
int scenario_blk_bench(void);
int scenario_net(void);
int scenario_net_bench(void);
int scenario_console(void);
int scenario_agent(void);
int scenario_9p(int read_only);
int scenario_9p_escape(void);

/* The virtio-console port as a byte stream (console.c): the first console device, or the last
 * one (the agent's, which nodevisor adds after the console). Each returns 0 or a VIRTIO_E* code. */
int port_open(const char *who, int last);
struct vdev *port_device(void);
int port_write(const void *data, u32 len);
int port_flush(void);
int port_read(u8 **data, u32 *len);
void port_release(void);

/* Prints "WHO: FAIL (exit code CODE): MESSAGE" and returns code. */
int fail(int code, const char *who, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Finds the nth device of `type`, negotiates `wanted`, sets up queues 0..nq-1 (at most qsize
 * entries each) and sets DRIVER_OK. Returns 0 or a VIRTIO_E* code (after printing it). */
int device_up(struct vdev *d, const char *who, u16 type, int nth, u64 wanted, int nq, u16 qsize);
/* Resets and brings up again a device already found (after NEEDS_RESET). */
int device_restart(struct vdev *d, const char *who, u64 wanted, int nq, u16 qsize);
/* "N.NN" units per second for `amount` units moved in `ticks` TSC ticks, scaled by 1/`unit`. */
void print_rate(const char *label, u64 amount, u64 ticks, u64 unit);
/* The TSC rate and where it came from, once per run, as "bench: tsc-hz=... source=...". */
void print_tsc(void);
#endif
