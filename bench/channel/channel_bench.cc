// xproc-channel-bench: the channel between processes (fork on MAP_SHARED memory), 64-byte
// messages by default: streaming 1->1 (MPMC and SPSC formats), ping-pong with both sides spinning
// and with both sides parking, MPMC 2->2 streaming. Each row: median of 5 runs, the spread
// (min..max) and context switches per message (getrusage of the worker processes).
//
// Usage: xproc-channel-bench [messages] [payload_bytes]
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "xproc/channel/endpoint.h"
#include "xproc/sys/memory.h"

namespace {

using namespace xproc;
using Clock = std::chrono::steady_clock;

struct Control {
  std::atomic<int> ready{0};
  std::atomic<int> go{0};
  std::atomic<long> switches{0};  // voluntary + involuntary, summed over workers
  std::atomic<std::int64_t> start_ns{0};
  std::atomic<std::int64_t> end_ns{0};
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

long context_switches() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_nvcsw + usage.ru_nivcsw;
}

void pin(int cpu) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  int seen = 0;
  for (std::size_t c = 0; c < static_cast<std::size_t>(CPU_SETSIZE); ++c) {
    if (!CPU_ISSET(c, &allowed)) continue;
    if (seen++ == cpu % CPU_COUNT(&allowed)) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(c, &one);
      (void)sched_setaffinity(0, sizeof(one), &one);
      return;
    }
  }
}

struct Region {
  explicit Region(const channel::ChannelConfig& config)
      : mapping(sys::SharedMapping::anonymous(channel::region_size_for(config)).value()) {
    if (channel::format(bytes(), config)) std::abort();
  }
  std::span<std::byte> bytes() const {
    return {static_cast<std::byte*>(mapping.data()), mapping.size()};
  }
  channel::Endpoint open() const { return channel::Endpoint::open(bytes()).value(); }
  sys::SharedMapping mapping;
};

// Runs `workers` processes (worker i pinned to CPU i); each waits for go, runs its body, and
// adds its context switches. Returns {seconds from go to the last end, switches}.
struct RunResult {
  double seconds;
  long switches;
};

RunResult run_processes(const std::vector<std::function<void()>>& bodies) {
  auto control_mapping = sys::SharedMapping::anonymous(sizeof(Control)).value();
  auto* control = new (control_mapping.data()) Control;
  std::vector<pid_t> pids;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      pin(static_cast<int>(i));
      control->ready.fetch_add(1);
      while (control->go.load() == 0) {
      }
      const long before = context_switches();
      bodies[i]();
      control->switches.fetch_add(context_switches() - before);
      std::int64_t end = now_ns();
      std::int64_t seen = control->end_ns.load();
      while (seen < end && !control->end_ns.compare_exchange_weak(seen, end)) {
      }
      _exit(0);
    }
    pids.push_back(pid);
  }
  while (control->ready.load() < static_cast<int>(bodies.size())) sched_yield();
  control->start_ns.store(now_ns());
  control->go.store(1);
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
  }
  return {static_cast<double>(control->end_ns.load() - control->start_ns.load()) / 1e9,
          control->switches.load()};
}

struct Row {
  std::string name;
  std::string unit;
  std::vector<double> values;
  std::vector<double> switches_per_message;
};

void print(Row& row) {
  std::sort(row.values.begin(), row.values.end());
  std::sort(row.switches_per_message.begin(), row.switches_per_message.end());
  std::printf("%-46s %12.3f %-8s (min %.3f, max %.3f)  cs/msg %.4f\n", row.name.c_str(),
              row.values[row.values.size() / 2], row.unit.c_str(), row.values.front(),
              row.values.back(), row.switches_per_message[row.switches_per_message.size() / 2]);
}

constexpr int kRuns = 5;

void streaming(const std::string& name, long messages, std::size_t size, bool spsc, int producers,
               int consumers) {
  Row row{name, "M msg/s", {}, {}};
  for (int run = 0; run < kRuns; ++run) {
    channel::ChannelConfig config;
    config.capacity_bytes = 1u << 16;
    config.max_message = 1024;
    config.spsc = spsc;
    Region region(config);
    auto received_mapping = sys::SharedMapping::anonymous(sizeof(std::atomic<long>)).value();
    auto* received = new (received_mapping.data()) std::atomic<long>(0);
    const long per_producer = messages / producers;
    const long total = per_producer * producers;
    std::vector<std::function<void()>> bodies;
    for (int p = 0; p < producers; ++p) {
      bodies.emplace_back([&] {
        channel::Endpoint endpoint = region.open();
        std::vector<std::byte> message(size, std::byte{1});
        for (long i = 0; i < per_producer; ++i) {
          if (endpoint.send(message)) std::abort();
        }
      });
    }
    for (int c = 0; c < consumers; ++c) {
      bodies.emplace_back([&] {
        channel::Endpoint endpoint = region.open();
        std::vector<std::byte> storage(1024);
        const std::span<std::byte> buffer(storage);  // the caller-buffer overloads
        for (;;) {
          if (received->load(std::memory_order_relaxed) >= total) return;
          Result<std::size_t> n =
              endpoint.receive_until(buffer, Clock::now() + std::chrono::milliseconds(5));
          if (n) received->fetch_add(1, std::memory_order_relaxed);
        }
      });
    }
    RunResult result = run_processes(bodies);
    row.values.push_back(static_cast<double>(total) / result.seconds / 1e6);
    row.switches_per_message.push_back(static_cast<double>(result.switches) /
                                       static_cast<double>(total));
  }
  print(row);
}

// Ping-pong between two processes over two channels; `spin`: both sides busy-poll try_receive,
// otherwise receive() (spin briefly, then park).
void ping_pong(const std::string& name, long round_trips, std::size_t size, bool spin) {
  Row row{name, "us/rt", {}, {}};
  for (int run = 0; run < kRuns; ++run) {
    channel::ChannelConfig config;
    config.capacity_bytes = 1u << 14;
    config.max_message = 1024;
    config.spsc = true;
    Region forth(config);
    Region back(config);
    const auto side = [&](const Region& in, const Region& out, bool starts) {
      channel::Endpoint rx = in.open();
      channel::Endpoint tx = out.open();
      std::vector<std::byte> message(size, std::byte{2});
      std::vector<std::byte> storage(1024);
      const std::span<std::byte> buffer(storage);  // the caller-buffer overloads
      if (starts && tx.send(message)) std::abort();
      for (long i = 0; i < round_trips; ++i) {
        if (spin) {
          while (!rx.try_receive(buffer)) {
          }
        } else if (!rx.receive(buffer)) {
          std::abort();
        }
        if ((starts && i + 1 == round_trips)) return;
        if (tx.send(message)) std::abort();
      }
    };
    RunResult result =
        run_processes({[&] { side(back, forth, true); }, [&] { side(forth, back, false); }});
    row.values.push_back(result.seconds * 1e6 / static_cast<double>(round_trips));
    row.switches_per_message.push_back(static_cast<double>(result.switches) /
                                       static_cast<double>(2 * round_trips));
  }
  print(row);
}

}  // namespace

int main(int argc, char** argv) {
  const long messages = argc > 1 ? std::atol(argv[1]) : 5'000'000;
  const std::size_t size = argc > 2 ? static_cast<std::size_t>(std::atol(argv[2])) : 64;
  if (messages <= 0 || size > 1024) {
    std::fprintf(stderr,
                 "xproc-channel-bench: usage: xproc-channel-bench [messages] [bytes<=1024]\n");
    return 2;
  }
  std::printf(
      "xproc-channel-bench: %ld messages of %zu bytes, median of %d runs, processes pinned\n",
      messages, size, kRuns);
  streaming("streaming 1->1, MPMC format", messages, size, false, 1, 1);
  streaming("streaming 1->1, SPSC format", messages, size, true, 1, 1);
  streaming("streaming 2->2, MPMC", messages, size, false, 2, 2);
  ping_pong("ping-pong, both sides spinning (SPSC pair)", messages / 20, size, true);
  ping_pong("ping-pong, both sides parking (SPSC pair)", messages / 200, size, false);
  return 0;
}
