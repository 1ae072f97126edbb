#pragma once
/* The C API of xproc's channels: a bounded multi-producer multi-consumer queue of
 * variable-length messages in shared memory, between threads and processes of one host.
 *
 * What it defines: the opaque handle xproc_channel_t (a C++ xproc::channel::Channel: a shared
 * memory segment of kind channel, this process's attachment to it, and an optional readiness
 * descriptor), the reservation and message records of the zero-copy paths, the statistics
 * record, flags and functions. Semantics are those of include/xproc/channel/endpoint.h:
 * bounded by bytes; a message is 0..max_message bytes (larger: EMSGSIZE, never truncated);
 * every committed message goes to exactly one receiver while receivers live (at least once
 * with XPROC_CHANNEL_REDELIVERY); order is kept per sender thread; a full channel never
 * overwrites.
 *
 * Return values: every function returns 0 or an errno value and never sets errno (the fd
 * accessors return the descriptor or -1). Codes used:
 *   EAGAIN     would block (try_* functions: full or empty channel)
 *   ETIMEDOUT  the deadline passed (timed* functions)
 *   EMSGSIZE   message larger than max_message (send/reserve), or receive buffer too small:
 *              the message stays queued and *len is set to the size needed
 *   ENOENT     no channel of that name          EEXIST  the name exists (create)
 *   EINVAL     a NULL or bad argument, a bad name, a reservation/message not active, a file
 *              that is not a channel of this layout, or a corrupt channel (a peer wrote bytes
 *              no correct writer produces: refused, never undefined behaviour)
 *   EACCES     permission denied (open/adopt)    ENOMEM / other OS errno: as the OS reports
 *   EOWNERDEAD a peer needed for the operation is dead: a blocking send/reserve on a full
 *              channel that no live process can receive from any more, a blocking receive/peek
 *              on an empty channel that no live process can send to any more (end of stream;
 *              everything sent came first). A live process that has not used the channel yet
 *              counts as a possible peer.
 * No C++ exception crosses this API; the send, receive, reserve and peek paths never allocate.
 * Interrupted waits are resumed, never EINTR.
 *
 * Deadlines: the timed functions take an ABSOLUTE CLOCK_MONOTONIC deadline (as xproc/c/sync.h),
 * built with clock_gettime(CLOCK_MONOTONIC, ...). tv_nsec outside [0, 999999999]: EINVAL; a
 * deadline already past: ETIMEDOUT unless the operation completes without waiting.
 *
 * Thread- and process-safety: every function except close may be called concurrently on one
 * handle from any thread; every process that opens (or adopts) the channel may use it, except
 * that a channel created with XPROC_CHANNEL_SPSC allows at most one sending thread and one
 * receiving thread at a time, in all processes together (not checked).
 * Blocking: send, receive, reserve, peek block (spin briefly, then sleep on a futex) until they
 * can proceed; their timed* variants until the deadline; try_* never sleep.
 *
 * Deaths (SIGKILL of any participant at any instant): survivors never block for good. A sender
 * that dies between reserve and commit leaves a record that receivers skip (never delivered);
 * a receiver that dies between peek and release loses that message, or with
 * XPROC_CHANNEL_REDELIVERY it goes back to the queue for another receiver; lock holders that
 * die are replaced by the next waiter. A process is a sender from its first send/reserve (or
 * xproc_channel_declare) and a receiver from its first receive/peek; when every process on the
 * other side has died, blocking calls answer EOWNERDEAD instead of waiting for good.
 * Details: include/xproc/channel/endpoint.h and docs/decisions/0034-channel-roles.md.
 * fork(): a handle inherited by a fork child is detached (it never detects dead peers); the
 * child opens the channel again (xproc_channel_open, or xproc_channel_adopt of the fd).
 *
 * Readiness descriptor: xproc_channel_readiness_fd gives an eventfd to put in epoll/poll:
 * readable means a try_receive may succeed. Drain with xproc_channel_try_receive (or
 * try_peek) until EAGAIN, then read() 8 bytes from the descriptor to re-arm (or call
 * xproc_channel_readiness_rearm). A message sent at any time after that makes it readable
 * again. It costs one thread per handle, parked when idle (docs/decisions/0033).
 */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* mode_t */
#include <time.h>      /* struct timespec */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- flags of xproc_channel_create / xproc_channel_create_anonymous ------------------------ */
#define XPROC_CHANNEL_SPSC 0x1          /* one sender thread and one receiver thread at a time */
#define XPROC_CHANNEL_REDELIVERY 0x2    /* a dead receiver's unreleased message is re-queued */
#define XPROC_CHANNEL_OPEN_EXISTING 0x4 /* create: if the name exists, open it instead */

#define XPROC_CHANNEL_NAME_MAX 200 /* longest accepted name (bytes) */

/* ---- roles of xproc_channel_declare (may be or-ed) --------------------------------------- */
#define XPROC_CHANNEL_SENDER 0x1
#define XPROC_CHANNEL_RECEIVER 0x2

/* ---- types ------------------------------------------------------------------------------- */

typedef struct xproc_channel xproc_channel_t; /* opaque */

/* A reservation (zero-copy send): write up to `size` bytes at `data`, then commit or abandon.
 * Filled by xproc_channel_reserve; the opaque part belongs to the library. Do not copy a live
 * reservation and use both copies. */
typedef struct xproc_channel_reservation {
  void* data;
  size_t size;
  union {
    unsigned char bytes[96];
    uint64_t align;
  } xproc_opaque_;
} xproc_channel_reservation_t;

/* A message read in place (zero-copy receive): read `size` bytes at `data`, then release. */
typedef struct xproc_channel_message {
  const void* data;
  size_t size;
  union {
    unsigned char bytes[96];
    uint64_t align;
  } xproc_opaque_;
} xproc_channel_message_t;

/* A snapshot of the channel's counters (xproc::channel::Statistics, same meanings). */
typedef struct xproc_channel_statistics {
  uint64_t capacity;          /* ring bytes */
  uint64_t max_message;       /* largest payload */
  uint64_t depth_messages;    /* queued: reserved or committed, not yet received */
  uint64_t depth_bytes;       /* ring bytes those records use (headers and padding included) */
  uint64_t claimed_bytes;     /* received or being read, space not reclaimed yet */
  uint64_t senders_waiting;   /* announced sleepers (may count dead ones) */
  uint64_t receivers_waiting; /* idem (a readiness waker counts as one) */
  uint64_t reserved_total;    /* reservations ever */
  uint64_t claimed_total;     /* receptions ever (redeliveries count again) */
  uint64_t abandoned;         /* reservations dropped without commit */
  uint64_t producer_died;     /* records of dead senders skipped */
  uint64_t consumer_died;     /* records held by dead receivers reclaimed */
  uint64_t redelivered;       /* ... of which re-queued */
  uint64_t lock_takeovers;    /* locks taken from dead holders */
} xproc_channel_stats_t;

/* ---- lifetime ------------------------------------------------------------------------------ */

/* Creates the named channel /dev/shm/xproc.<name> (name: 1..XPROC_CHANNEL_NAME_MAX characters
 * of [A-Za-z0-9._-], not starting with '.'), with a ring of `capacity` bytes (a power of two in
 * 256..2^30) and messages of at most `max_message` bytes (max_message + 32 <= capacity), file
 * permissions `mode` (exactly; the umask does not apply). flags: XPROC_CHANNEL_SPSC, _REDELIVERY,
 * _OPEN_EXISTING. 0 and *out = a new handle; EEXIST (without OPEN_EXISTING), EINVAL (bad name,
 * sizes, flags, NULL out), EACCES, or an OS errno; with OPEN_EXISTING also xproc_channel_open's
 * codes. */
int xproc_channel_create(const char* name, size_t capacity, size_t max_message, int flags,
                         mode_t mode, xproc_channel_t** out);
/* Opens an existing named channel. ENOENT, EACCES, EINVAL (not a channel, other layout,
 * corrupt), or an OS errno. */
int xproc_channel_open(const char* name, xproc_channel_t** out);
/* Creates an unnamed channel (a memfd); pass xproc_channel_fd() to peers (SCM_RIGHTS, or
 * inheritance), who call xproc_channel_adopt. Codes as create, without EEXIST. */
int xproc_channel_create_anonymous(size_t capacity, size_t max_message, int flags,
                                   xproc_channel_t** out);
/* The descriptor of the channel's file (owned by the handle: do not close it); -1 for NULL. */
int xproc_channel_fd(const xproc_channel_t* channel);
/* Opens the channel whose file `fd` refers to. The caller keeps `fd` (it is duplicated).
 * EBADF (fd < 0 or not open), EINVAL (not a channel...), EACCES, or an OS errno. */
int xproc_channel_adopt(int fd, xproc_channel_t** out);
/* Detaches and frees the handle (stops its readiness thread). No other call on it may be in
 * progress or follow. NULL: 0. Reservations and messages of this handle must be finished. */
int xproc_channel_close(xproc_channel_t* channel);
/* Removes the name; open handles keep working. ENOENT, EINVAL (bad name, not a channel),
 * EACCES, or an OS errno. */
int xproc_channel_unlink(const char* name);
/* Counts this process as a sender and/or receiver from now on, before its first message (peers
 * then do not take the end of the others for the end of the stream). EINVAL: NULL channel, or
 * roles not a nonzero combination of XPROC_CHANNEL_SENDER / XPROC_CHANNEL_RECEIVER. */
int xproc_channel_declare(xproc_channel_t* channel, int roles);

/* ---- sending -------------------------------------------------------------------------------- */

/* Sends `size` bytes at `data` (data may be NULL when size is 0). send blocks while the channel
 * is full; try_send: EAGAIN instead; timedsend: ETIMEDOUT at the deadline.
 * EMSGSIZE (size > max_message), EINVAL (NULL channel/data, corrupt channel). */
int xproc_channel_send(xproc_channel_t* channel, const void* data, size_t size);
int xproc_channel_try_send(xproc_channel_t* channel, const void* data, size_t size);
int xproc_channel_timedsend(xproc_channel_t* channel, const void* data, size_t size,
                            const struct timespec* abstime);

/* Zero-copy: reserves `size` bytes in the ring and fills *reservation (data, size). Blocking
 * and codes as send. Then exactly one of commit (delivers it) or abandon (drops it; counted in
 * abandoned). Both: EINVAL when the reservation is not active (never reserved, or finished). */
int xproc_channel_reserve(xproc_channel_t* channel, size_t size,
                          xproc_channel_reservation_t* reservation);
int xproc_channel_try_reserve(xproc_channel_t* channel, size_t size,
                              xproc_channel_reservation_t* reservation);
int xproc_channel_timedreserve(xproc_channel_t* channel, size_t size,
                               xproc_channel_reservation_t* reservation,
                               const struct timespec* abstime);
int xproc_channel_commit(xproc_channel_t* channel, xproc_channel_reservation_t* reservation);
int xproc_channel_abandon(xproc_channel_t* channel, xproc_channel_reservation_t* reservation);

/* ---- receiving ------------------------------------------------------------------------------ */

/* Receives the next message into `buffer` (`capacity` bytes; may be NULL when capacity is 0)
 * and sets *len to its size. receive blocks while the channel is empty; try_receive: EAGAIN;
 * timedreceive: ETIMEDOUT. EMSGSIZE: the next message is larger than `capacity`; it stays
 * queued and *len is set to its size. EINVAL: NULL channel/len, buffer NULL with capacity > 0,
 * corrupt channel. */
int xproc_channel_receive(xproc_channel_t* channel, void* buffer, size_t capacity, size_t* len);
int xproc_channel_try_receive(xproc_channel_t* channel, void* buffer, size_t capacity, size_t* len);
int xproc_channel_timedreceive(xproc_channel_t* channel, void* buffer, size_t capacity, size_t* len,
                               const struct timespec* abstime);

/* Zero-copy: claims the next message and fills *message (data, size: valid until release).
 * Blocking and codes as receive (never EMSGSIZE). release: EINVAL when not active. */
int xproc_channel_peek(xproc_channel_t* channel, xproc_channel_message_t* message);
int xproc_channel_try_peek(xproc_channel_t* channel, xproc_channel_message_t* message);
int xproc_channel_timedpeek(xproc_channel_t* channel, xproc_channel_message_t* message,
                            const struct timespec* abstime);
int xproc_channel_release(xproc_channel_t* channel, xproc_channel_message_t* message);

/* ---- readiness and statistics ------------------------------------------------------------- */

/* The handle's readiness eventfd (created, with its waker thread, on the first call; owned by
 * the handle: do not close it). Contract in the banner. 0 and *fd; EINVAL (NULL), or the errno
 * of eventfd()/thread creation. */
int xproc_channel_readiness_fd(xproc_channel_t* channel, int* fd);
/* Reads the readiness eventfd (re-arm); never blocks. EINVAL when there is none. */
int xproc_channel_readiness_rearm(xproc_channel_t* channel);

/* Fills *stats. EINVAL for NULL. */
int xproc_channel_stats(const xproc_channel_t* channel, xproc_channel_stats_t* stats);

#ifdef __cplusplus
} /* extern "C" */
#endif
