#pragma once
// xproc::channel::ReadinessFd: a file descriptor (an eventfd) that becomes readable when a
// channel may hold a message, so a consumer can wait for the channel inside its own
// epoll/poll/io_uring loop together with sockets (docs/decisions/0033-channel-c-api.md).
//
// A futex cannot be polled and an eventfd is local to one process, so each consumer process
// that wants a descriptor runs one small waker thread (started by create(), joined by the
// destructor). The waker alternates between two states:
//   armed:    parked on the channel's not_empty EventCount until a message may be ready. Commits
//             notify not_empty with notify_all, so the waker never takes a wake-up from a real
//             receiver. It then writes 0xfffffffffffffffe to the eventfd: readable, and no longer
//             writable (eventfd's POLLOUT needs a counter below that value).
//   signaled: blocked in poll() for POLLOUT on the eventfd: it wakes when the consumer read()s
//             the eventfd (counter back to 0), re-checks the channel and, if a message is still
//             (or already again) there, signals at once; otherwise it re-arms.
// Contract for the consumer, whatever the epoll mode (level or edge):
//   readable means: try_receive may succeed. Drain with try_receive (or try_peek) until
//   would_block, then read() the eventfd (8 bytes; the value is meaningless) to re-arm.
// No lost readiness: a message committed at any instant after the read() re-arms makes the
// descriptor readable again (the waker re-checks the channel after every re-arm, and a commit
// after that re-check wakes it through not_empty). Reading before draining is also correct,
// but may give one spurious readiness per batch.
// Idle (empty channel, or the consumer has not re-armed) costs no CPU: the waker sleeps in the
// futex or in poll(). While armed, the waker counts as a parked receiver, so one commit per
// batch makes a futex wake system call, as with any parked receiver. A producer that dies while
// writing the head record is checked every kPeerCheckPeriod (and its record aborted, so that
// try_receive moves past it); with redelivery on, records claimed by dead consumers are put
// back while the waker waits, as a parked receiver does.
//
// Thread- and process-safety: fd() may be read by any thread; one ReadinessFd per consumer
// process is enough (several are allowed: each has its own waker). The Endpoint's channel (the
// mapping and its Participant) must outlive the ReadinessFd.
// Blocking: create() starts a thread (every signal blocked in it); the destructor stops it (setting
// a flag, writing a stop eventfd, and one notify_all on not_empty, which wakes parked receivers
// spuriously once) and joins it: microseconds. Failures: create(): the errno of eventfd() or of
// starting the thread (system category), errc::invalid_argument for an Endpoint not open. Deaths:
// the waker holds the claim lock only for a try-lock read of the head (as a receiver about to park
// does); a process killed there leaves a lock that the next claimer takes over. Its eventfd dies
// with it. A dead producer or consumer: see above. fork(): the child has no waker thread; its copy
// of the descriptor is the parent's eventfd. Do not use a ReadinessFd inherited through fork():
// create a new one. Destroying the child's copy is safe (it closes the child's copies of the
// descriptors and joins nothing).

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include <sys/types.h>

#include "xproc/channel/endpoint.h"
#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::channel {

class ReadinessFd {
 public:
  // Creates the eventfd (non-blocking, close-on-exec) and starts the waker on `endpoint`.
  static Result<std::unique_ptr<ReadinessFd>> create(const Endpoint& endpoint) noexcept;

  ReadinessFd(const ReadinessFd&) = delete;
  ReadinessFd& operator=(const ReadinessFd&) = delete;
  ~ReadinessFd();

  // The eventfd to poll for reading (owned by this object: do not close it).
  int fd() const noexcept { return event_fd_.get(); }
  // read()s the eventfd (re-arm), never blocks: what the contract above asks after draining.
  void rearm() const noexcept;

  struct Counters {
    std::uint64_t signals = 0;  // times the waker made the descriptor readable
    std::uint64_t wakeups = 0;  // times the waker thread returned from a park (futex or poll)
  };
  Counters counters() const noexcept;

 private:
  explicit ReadinessFd(const Endpoint& endpoint) noexcept : endpoint_(endpoint) {}
  void run() noexcept;
  bool wait_until_ready() noexcept;  // armed state; false: stop requested
  bool wait_for_rearm() noexcept;    // signaled state; false: stop requested

  Endpoint endpoint_;
  sys::FileDescriptor event_fd_;
  sys::FileDescriptor stop_fd_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> signals_{0};
  std::atomic<std::uint64_t> wakeups_{0};
  pid_t creator_ = 0;                   // the process whose thread waker_ is
  std::unique_ptr<std::thread> waker_;  // released, not joined, in a fork child
};

}  // namespace xproc::channel
