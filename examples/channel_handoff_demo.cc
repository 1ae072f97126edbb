// The channel hand-off demo: a sender process with N threads, each sending M messages of 8 bytes
// (thread id << 32 | sequence) through one xproc::channel::Channel, and a receiver process that
// checks every message arrived exactly once and, per sender thread, in order (0, 1, 2, ...).
//
//   channel_handoff_demo [--threads N] [--per-thread M] [--name NAME] [--timeout SECONDS]
//   (defaults: 30 threads x 200000 messages, an anonymous segment, 300 s)
//
// The parent creates the channel in a shared-memory segment (anonymous: a memfd the children
// inherit and adopt through a new open file description; --name: /dev/shm/xproc.NAME, opened by
// name and unlinked at the end), forks the receiver and the sender, starts them together and
// reaps them with wait4(), whose rusage gives each process's context switches (all its threads).
// Prints what it did, the elapsed time (start signal .. last message received), messages per
// second, context switches per message and the channel's statistics. Exits 1 when a message is
// missing, duplicated, out of order or extra, or a process failed; every wait is bounded by the
// timeout (a failed child gets its peer killed at once).
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "xproc/channel/channel.h"
#include "xproc/sync/barrier.h"
#include "xproc/sys/file.h"
#include "xproc/sys/memory.h"

namespace {

using namespace xproc;
using Clock = std::chrono::steady_clock;

struct Options {
  int threads = 30;
  long per_thread = 200000;
  std::string name;  // empty: anonymous segment
  std::chrono::seconds timeout{300};
};

// What the processes share besides the channel (anonymous MAP_SHARED memory, zero-filled).
struct Control {
  // Parent, receiver and sender meet here once both children have opened the channel.
  sync::Barrier start{sync::Scope::process, 3};
  std::atomic<std::uint32_t> sender_done;
  std::atomic<std::int64_t> end_ns;  // the receiver's last message
  std::atomic<std::uint64_t> received;
  std::atomic<std::uint32_t> receiver_ok;
  std::atomic<std::uint32_t> sender_ok;
  char receiver_failure[256];
  char sender_failure[256];
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

void set_failure(char (&slot)[256], const std::string& text) {
  std::snprintf(slot, sizeof slot, "%s", text.c_str());
}

// The child's own attachment to the channel (the inherited Channel is detached after fork).
Result<channel::Channel> join(const Options& options, const channel::Channel& inherited) {
  if (!options.name.empty()) return channel::Channel::open(options.name);
  Result<sys::FileDescriptor> fd = sys::reopen(inherited.segment().fd());
  if (!fd) return fd.error();
  return channel::Channel::adopt(std::move(*fd));
}

// Waits (bounded) until the other child and the parent are ready too.
bool ready_set_go(Control& control, Clock::time_point deadline) {
  return control.start.arrive_and_wait_until(deadline).has_value();
}

std::string describe(std::error_code error) {
  return error.message();
}

void run_receiver(const Options& options, const channel::Channel& inherited, Control& control,
                  Clock::time_point deadline) {
  Result<channel::Channel> joined = join(options, inherited);
  if (!joined) return set_failure(control.receiver_failure, "open: " + describe(joined.error()));
  const channel::Channel& ch = *joined;
  std::vector<std::uint64_t> next(static_cast<std::size_t>(options.threads), 0);
  const std::uint64_t total =
      static_cast<std::uint64_t>(options.threads) * static_cast<std::uint64_t>(options.per_thread);
  if (!ready_set_go(control, deadline))
    return set_failure(control.receiver_failure, "no start signal before the timeout");
  std::uint64_t value = 0;
  const std::span<std::byte> buffer(reinterpret_cast<std::byte*>(&value), sizeof value);
  for (std::uint64_t received = 0; received < total; ++received) {
    Result<std::size_t> got = ch->receive_until(buffer, deadline);
    if (!got) {
      return set_failure(control.receiver_failure, "receive after " + std::to_string(received) +
                                                       " messages: " + describe(got.error()));
    }
    const std::uint64_t thread = value >> 32;
    const std::uint64_t sequence = value & 0xffffffffu;
    if (*got != sizeof value || thread >= next.size() || sequence != next[thread]) {
      return set_failure(
          control.receiver_failure,
          "message " + std::to_string(received) + ": size " + std::to_string(*got) + ", thread " +
              std::to_string(thread) + ", sequence " + std::to_string(sequence) +
              (thread < next.size() ? ", expected " + std::to_string(next[thread]) : "") +
              " (lost, duplicated, reordered or foreign)");
    }
    ++next[thread];
    // relaxed: progress for the parent's report on failure; read after wait4.
    control.received.store(received + 1, std::memory_order_relaxed);
  }
  control.end_ns.store(now_ns(), std::memory_order_relaxed);  // read by the parent after wait4
  // Nothing more may come: wait until every sender thread returned, then the channel is empty.
  // acquire: pairs with the sender's release store after joining its threads.
  while (control.sender_done.load(std::memory_order_acquire) == 0) {
    if (Clock::now() >= deadline)
      return set_failure(control.receiver_failure, "the sender did not finish before the timeout");
    std::this_thread::yield();
  }
  Result<std::size_t> extra = ch->try_receive(buffer);
  if (extra || extra.error() != make_error_code(errc::would_block)) {
    return set_failure(control.receiver_failure,
                       extra ? "an extra message after all were received"
                             : "try_receive at the end: " + describe(extra.error()));
  }
  control.receiver_ok.store(1, std::memory_order_relaxed);  // read by the parent after wait4
}

void run_sender(const Options& options, const channel::Channel& inherited, Control& control,
                Clock::time_point deadline) {
  Result<channel::Channel> joined = join(options, inherited);
  if (!joined) return set_failure(control.sender_failure, "open: " + describe(joined.error()));
  const channel::Channel& ch = *joined;
  if (!ready_set_go(control, deadline))
    return set_failure(control.sender_failure, "no start signal before the timeout");
  std::vector<std::error_code> errors(static_cast<std::size_t>(options.threads));
  std::vector<std::thread> threads;
  threads.reserve(errors.size());
  for (std::size_t t = 0; t < errors.size(); ++t) {
    threads.emplace_back([&, t] {
      for (long i = 0; i < options.per_thread; ++i) {
        const std::uint64_t value = std::uint64_t{t} << 32 | static_cast<std::uint64_t>(i);
        const std::span<const std::byte> message(reinterpret_cast<const std::byte*>(&value),
                                                 sizeof value);
        if (std::error_code error = ch->send_until(message, deadline)) {
          errors[t] = error;
          return;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  // release: every send returned before; pairs with the receiver's acquire load.
  control.sender_done.store(1, std::memory_order_release);
  for (std::size_t t = 0; t < errors.size(); ++t) {
    if (errors[t]) {
      return set_failure(control.sender_failure,
                         "thread " + std::to_string(t) + ": send: " + describe(errors[t]));
    }
  }
  control.sender_ok.store(1, std::memory_order_relaxed);  // read by the parent after wait4
}

template <class Body>
pid_t fork_child(Body body) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    // The outcome is in Control; a non-zero exit makes the parent kill the peer at once.
    // _exit: no static destructors in the child.
    _exit(body() ? 0 : 1);
  }
  return pid;
}

struct Reaped {
  int status = -1;  // -1: killed by the parent (timeout or peer failure), or lost
  rusage usage{};
};

// Reaps both children; when one fails, or the deadline passes, the other is killed.
void reap(const pid_t (&pids)[2], Reaped (&reaped)[2], Clock::time_point deadline) {
  bool done[2] = {false, false};
  while (!done[0] || !done[1]) {
    for (int i = 0; i < 2; ++i) {
      if (done[i]) continue;
      int status = 0;
      rusage usage{};
      const pid_t got = wait4(pids[i], &status, WNOHANG, &usage);
      if (got == 0) continue;
      done[i] = true;
      if (got == pids[i]) reaped[i] = {status, usage};
      const bool failed = got != pids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
      if (failed && !done[1 - i]) kill(pids[1 - i], SIGKILL);
    }
    if (Clock::now() >= deadline) {
      for (int i = 0; i < 2; ++i)
        if (!done[i]) kill(pids[i], SIGKILL);
    }
    if (!done[0] || !done[1]) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool parse_long(const char* text, long& value) {
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || parsed <= 0) return false;
  value = parsed;
  return true;
}

int usage() {
  std::fprintf(stderr,
               "usage: channel_handoff_demo [--threads N (1..4096)] [--per-thread M] "
               "[--name NAME] [--timeout SECONDS]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    long value = 0;
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--threads") == 0 && has_value) {
      if (!parse_long(argv[++i], value) || value > 4096) return usage();
      options.threads = static_cast<int>(value);
    } else if (std::strcmp(argv[i], "--per-thread") == 0 && has_value) {
      if (!parse_long(argv[++i], value) || value > 0xffffffffL) return usage();
      options.per_thread = value;
    } else if (std::strcmp(argv[i], "--timeout") == 0 && has_value) {
      if (!parse_long(argv[++i], value)) return usage();
      options.timeout = std::chrono::seconds(value);
    } else if (std::strcmp(argv[i], "--name") == 0 && has_value) {
      options.name = argv[++i];
      if (!shm::valid_segment_name(options.name)) return usage();
    } else {
      return usage();
    }
  }

  channel::ChannelConfig config;
  config.capacity_bytes = 1u << 20;
  config.max_message = 64;
  shm::SegmentOptions segment_options;
  segment_options.unlink_when_last_detaches = true;
  Result<channel::Channel> created =
      options.name.empty() ? channel::Channel::create_anonymous(config, segment_options)
                           : channel::Channel::create(options.name, config, segment_options);
  if (!created) {
    std::fprintf(stderr, "channel_handoff_demo: creating the channel: %s\n",
                 created.error().message().c_str());
    return 1;
  }
  const channel::Channel& ch = *created;
  Result<sys::SharedMapping> memory = sys::SharedMapping::anonymous(sizeof(Control));
  if (!memory) {
    std::fprintf(stderr, "channel_handoff_demo: shared memory: %s\n",
                 memory.error().message().c_str());
    return 1;
  }
  Control& control = *new (memory->data()) Control{};

  const long long messages = static_cast<long long>(options.threads) * options.per_thread;
  std::printf(
      "channel hand-off: 1 sender process with %d threads x %ld messages of 8 bytes -> "
      "1 receiver process\n",
      options.threads, options.per_thread);
  std::printf("                  one xproc Channel (MPMC, %u KiB ring) in %s\n",
              ch->capacity() / 1024,
              options.name.empty() ? "an anonymous segment (memfd)"
                                   : ("/dev/shm/xproc." + options.name).c_str());

  const Clock::time_point deadline = Clock::now() + options.timeout;
  const pid_t pids[2] = {
      fork_child([&] {
        run_receiver(options, ch, control, deadline);
        return control.receiver_ok.load(std::memory_order_relaxed) != 0;  // this process's store
      }),
      fork_child([&] {
        run_sender(options, ch, control, deadline);
        return control.sender_ok.load(std::memory_order_relaxed) != 0;  // this process's store
      }),
  };
  bool started = pids[0] > 0 && pids[1] > 0;
  if (started) started = control.start.arrive_and_wait_until(deadline).has_value();
  const std::int64_t start_ns = now_ns();
  if (!started) {
    for (pid_t pid : pids)
      if (pid > 0) kill(pid, SIGKILL);
  }
  Reaped reaped[2];
  if (pids[0] > 0 && pids[1] > 0) {
    reap(pids, reaped, deadline + std::chrono::seconds(5));
  } else {
    for (pid_t pid : pids)
      if (pid > 0) (void)waitpid(pid, nullptr, 0);
  }
  if (!options.name.empty()) (void)ch.segment().unlink();

  // After wait4: the children's relaxed stores are visible (process exit orders them).
  const std::uint64_t received = control.received.load(std::memory_order_relaxed);
  const double seconds =
      static_cast<double>(control.end_ns.load(std::memory_order_relaxed) - start_ns) / 1e9;
  long voluntary = 0;
  long involuntary = 0;
  for (const Reaped& r : reaped) {
    voluntary += r.usage.ru_nvcsw;
    involuntary += r.usage.ru_nivcsw;
  }
  const channel::Statistics stats = ch->statistics();
  std::printf("messages: %lld sent, %llu received and checked\n", messages,
              static_cast<unsigned long long>(received));
  if (control.receiver_ok.load(std::memory_order_relaxed) != 0 && seconds > 0) {
    std::printf("elapsed:  %.3f s, %.2f million messages/s\n", seconds,
                static_cast<double>(received) / seconds / 1e6);
  }
  std::printf(
      "context switches (both processes, all threads): %ld voluntary + %ld involuntary = %ld "
      "(%.4f per message)\n",
      voluntary, involuntary, voluntary + involuntary,
      messages > 0 ? static_cast<double>(voluntary + involuntary) / static_cast<double>(messages)
                   : 0.0);
  std::printf("channel:  %llu reserved, %llu claimed, %llu lock takeovers, %llu producer deaths\n",
              static_cast<unsigned long long>(stats.reserved_total),
              static_cast<unsigned long long>(stats.claimed_total),
              static_cast<unsigned long long>(stats.lock_takeovers),
              static_cast<unsigned long long>(stats.producer_died));

  std::string failure;
  const char* roles[2] = {"receiver", "sender"};
  const char* texts[2] = {control.receiver_failure, control.sender_failure};
  const bool oks[2] = {control.receiver_ok.load(std::memory_order_relaxed) != 0,
                       control.sender_ok.load(std::memory_order_relaxed) != 0};
  if (!started) failure += "the processes did not start; ";
  for (int i = 0; i < 2; ++i) {
    const int status = reaped[i].status;
    if (status == -1) {
      failure += std::string(roles[i]) + " was killed (timeout or peer failure); ";
    } else if (WIFSIGNALED(status)) {
      failure += std::string(roles[i]) +
                 (WTERMSIG(status) == SIGKILL
                      ? " was killed (SIGKILL: from outside, or by this demo after its peer "
                        "failed or the timeout passed); "
                      : " died of signal " + std::to_string(WTERMSIG(status)) + "; ");
    }
    if (texts[i][0] != '\0') failure += std::string(roles[i]) + ": " + texts[i] + "; ";
    if (failure.empty() && !oks[i]) failure += std::string(roles[i]) + " did not finish; ";
  }
  if (!failure.empty()) {
    std::printf("FAILED: %s\n", failure.c_str());
    std::fprintf(stderr, "channel_handoff_demo: FAILED: %s\n", failure.c_str());
    return 1;
  }
  std::printf(
      "verified: every message exactly once, per sender thread in order (%lld messages, %d "
      "sequences complete), nothing extra\n",
      messages, options.threads);
  return 0;
}
