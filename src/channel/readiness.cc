// ReadinessFd: the per-process waker thread that turns the channel's not_empty EventCount into
// eventfd readiness (the state machine is in readiness.h).
#include "xproc/channel/readiness.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>

#include "ring_internal.h"

namespace xproc::channel {
namespace {

// Written to signal: readable (counter > 0) and not writable (POLLOUT needs a counter below
// 0xfffffffffffffffe), so the waker can poll for the consumer's read().
constexpr std::uint64_t kSignalValue = 0xfffffffffffffffeULL;

std::error_code last_error() noexcept {
  return {errno, std::system_category()};
}

Result<sys::FileDescriptor> make_eventfd() noexcept {
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return last_error();
  return sys::FileDescriptor(fd);
}

}  // namespace

Result<std::unique_ptr<ReadinessFd>> ReadinessFd::create(const Endpoint& endpoint) noexcept {
  if (endpoint.ring_.header == nullptr) return make_error_code(errc::invalid_argument);
  try {
    std::unique_ptr<ReadinessFd> readiness(new ReadinessFd(endpoint));
    Result<sys::FileDescriptor> event_fd = make_eventfd();
    if (!event_fd) return event_fd.error();
    Result<sys::FileDescriptor> stop_fd = make_eventfd();
    if (!stop_fd) return stop_fd.error();
    readiness->event_fd_ = std::move(*event_fd);
    readiness->stop_fd_ = std::move(*stop_fd);
    readiness->creator_ = ::getpid();
    ReadinessFd* self = readiness.get();
    // The waker starts with every signal blocked (it inherits the mask), so the application's
    // signal handlers never run on it; the creator's mask is restored right after.
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    try {
      readiness->waker_ = std::make_unique<std::thread>([self] { self->run(); });
    } catch (...) {
      pthread_sigmask(SIG_SETMASK, &previous, nullptr);
      throw;
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return readiness;
  } catch (const std::system_error& error) {
    return error.code();
  } catch (const std::bad_alloc&) {
    return std::make_error_code(std::errc::not_enough_memory);
  }
}

ReadinessFd::~ReadinessFd() {
  if (waker_ == nullptr) return;
  if (::getpid() != creator_) {
    // A fork child's copy: the thread does not exist here; never join or detach it.
    static_cast<void>(waker_.release());
    return;
  }
  // release: pairs with the waker's acquire loads; the notifications below wake it wherever it
  // is parked (EventCount guarantee: a notify after the change wakes a waiter that missed it).
  stop_.store(true, std::memory_order_release);
  const std::uint64_t one = 1;
  static_cast<void>(::write(stop_fd_.get(), &one, sizeof(one)));
  endpoint_.ring_.header->not_empty.event.notify_all();
  waker_->join();
}

void ReadinessFd::rearm() const noexcept {
  std::uint64_t value = 0;
  static_cast<void>(::read(event_fd_.get(), &value, sizeof(value)));
}

ReadinessFd::Counters ReadinessFd::counters() const noexcept {
  // relaxed: statistics.
  return {signals_.load(std::memory_order_relaxed), wakeups_.load(std::memory_order_relaxed)};
}

bool ReadinessFd::wait_until_ready() noexcept {
  const detail::Ring& ring = endpoint_.ring_;
  sync::EventCount& event = ring.header->not_empty.event;
  const bool redelivery = (ring.flags & detail::kFlagRedelivery) != 0;
  for (;;) {
    // acquire: pairs with the destructor's release store.
    if (stop_.load(std::memory_order_acquire)) return false;
    if (detail::data_ready(ring)) return true;
    const sync::EventCount::Key key = event.prepare_wait();
    // Re-check after announcing (EventCount protocol): a commit after this point wakes us.
    if (stop_.load(std::memory_order_acquire) || detail::data_ready(ring)) {
      event.cancel_wait();
      continue;
    }
    // As a receiver about to park: with redelivery, put back records of dead consumers.
    if (redelivery) {
      (void)detail::sweep(ring, true);
      if (detail::data_ready(ring)) {
        event.cancel_wait();
        continue;
      }
    }
    // Waiting on a specific peer (a producer writing the head record; with redelivery, consumers
    // holding claimed records): look at it every period. Otherwise sleep until notified.
    bool peer = detail::head_pending_owner(ring, false) != 0;
    if (!peer && redelivery) {
      // relaxed: a hint.
      peer = ring.header->consumer.head.load(std::memory_order_relaxed) !=
             ring.header->reclaim.reclaim.load(std::memory_order_relaxed);
    }
    if (peer) {
      const std::error_code waited = event.wait_until(key, sync::Clock::now() + kPeerCheckPeriod);
      if (waited == make_error_code(errc::timed_out)) {
        (void)detail::head_pending_owner(ring, true);
        if (redelivery) (void)detail::sweep(ring, true);
      }
    } else {
      (void)event.wait(key);
    }
    // relaxed: statistics.
    wakeups_.fetch_add(1, std::memory_order_relaxed);
  }
}

bool ReadinessFd::wait_for_rearm() noexcept {
  for (;;) {
    pollfd fds[2] = {{event_fd_.get(), POLLOUT, 0}, {stop_fd_.get(), POLLIN, 0}};
    const int ready = ::poll(fds, 2, -1);
    // relaxed: statistics.
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return false;  // cannot wait (EFAULT/ENOMEM): stop signalling rather than spin
    }
    if ((fds[1].revents & POLLIN) != 0 || stop_.load(std::memory_order_acquire)) return false;
    if ((fds[0].revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) != 0) return true;
  }
}

void ReadinessFd::run() noexcept {
  for (;;) {
    if (!wait_until_ready()) return;
    // relaxed: statistics (counted before the write, so a consumer that saw the fd readable
    // sees the count: the eventfd's write/read order the two).
    signals_.fetch_add(1, std::memory_order_relaxed);
    // A full counter (the consumer wrote to it itself) gives EAGAIN: it is readable anyway.
    static_cast<void>(::write(event_fd_.get(), &kSignalValue, sizeof(kSignalValue)));
    if (!wait_for_rearm()) return;
  }
}

}  // namespace xproc::channel
