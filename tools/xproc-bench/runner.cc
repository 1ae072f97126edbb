#include "runner.h"

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>

#include "children.h"

namespace xproc::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxChildren = 64;
constexpr std::uint64_t kEndProducer = 0xffffff;  // producer field of an end marker
constexpr int kSequenceBits = 40;

// What each child writes for the parent (in MAP_SHARED memory).
struct ChildReport {
  std::int64_t start_ns;  // steady_clock, after the start signal
  std::int64_t end_ns;    // after its last message
  std::int64_t switches;  // voluntary + involuntary, over [start, end]
  std::int64_t received;  // consumers: data messages received
  double p50_ns, p99_ns, p999_ns;
  char error[240];  // empty when the child succeeded
};

struct Control {
  std::atomic<std::uint32_t> ready;           // children set up; futex word the parent waits on
  std::atomic<std::uint32_t> go;              // 0 -> 1 starts every child; futex word
  std::atomic<std::uint32_t> producers_done;  // the last producer sends the end markers
  ChildReport reports[kMaxChildren];
};

std::uint64_t stamp(std::uint64_t producer, std::uint64_t sequence) {
  return (producer << kSequenceBits) | sequence;
}

void write_stamp(std::byte* buffer, std::size_t size, std::uint64_t word) {
  std::memcpy(buffer, &word, sizeof word);
  if (size >= 2 * sizeof word) std::memcpy(buffer + size - sizeof word, &word, sizeof word);
}

// Reads the stamp of a received message, checking its size and that both copies agree.
std::uint64_t read_stamp(const std::byte* buffer, std::size_t got, std::size_t size) {
  if (got != size)
    throw std::runtime_error("message of " + std::to_string(got) + " bytes, expected " +
                             std::to_string(size));
  std::uint64_t first = 0, last = 0;
  std::memcpy(&first, buffer, sizeof first);
  if (size >= 2 * sizeof last) {
    std::memcpy(&last, buffer + size - sizeof last, sizeof last);
    if (first != last) throw std::runtime_error("torn message (first and last stamps differ)");
  }
  return first;
}

struct Child {
  int index;     // report slot
  int role;      // 0 producer/ping, 1 consumer/pong
  int number;    // index among its role
  int cpu = -1;  // -1: unpinned
};

class Body {
 public:
  Body(Link& forward, Link* backward, const RunConfig& config, Control& control, std::byte* bitmaps,
       std::size_t bitmap_bytes)
      : forward_(forward),
        backward_(backward),
        config_(config),
        control_(control),
        bitmaps_(bitmaps),
        bitmap_bytes_(bitmap_bytes),
        buffer_(config.message_size) {}

  void run(const Child& child) {
    ChildReport& report = control_.reports[child.index];
    if (config_.mode == Mode::latency) {
      child.role == 0 ? ping(report) : pong(report);
    } else {
      child.role == 0 ? produce(child.number, report) : consume(child.number, report);
    }
  }

 private:
  void ping(ChildReport& report) {
    auto out = forward_.open_sender(0);
    auto in = backward_->open_receiver(0);
    announce_ready_and_wait(control_.ready, control_.go);
    report.start_ns = now_ns();
    std::int64_t switches = switches_now();
    long total = config_.warmup + config_.messages;
    std::vector<std::int64_t> rtt;
    rtt.reserve(static_cast<std::size_t>(config_.messages));
    std::size_t size = config_.message_size;
    for (long i = 0; i < total; ++i) {
      write_stamp(buffer_.data(), size, stamp(0, static_cast<std::uint64_t>(i)));
      std::int64_t t0 = now_ns();
      out->send(buffer_.data(), size);
      std::size_t got = in->receive(buffer_.data(), buffer_.size());
      std::int64_t t1 = now_ns();
      if (read_stamp(buffer_.data(), got, size) != stamp(1, static_cast<std::uint64_t>(i)))
        throw std::runtime_error("ping: wrong reply at round trip " + std::to_string(i));
      if (i >= config_.warmup) rtt.push_back(t1 - t0);
    }
    report.switches = switches_now() - switches;
    report.end_ns = now_ns();
    report.received = total;
    std::sort(rtt.begin(), rtt.end());
    auto percentile = [&](double p) {
      if (rtt.empty()) return 0.0;
      auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(rtt.size())));
      return static_cast<double>(rtt[std::clamp<std::size_t>(rank, 1, rtt.size()) - 1]);
    };
    report.p50_ns = percentile(0.5);
    report.p99_ns = percentile(0.99);
    report.p999_ns = percentile(0.999);
  }

  void pong(ChildReport& report) {
    auto in = forward_.open_receiver(0);
    auto out = backward_->open_sender(0);
    announce_ready_and_wait(control_.ready, control_.go);
    report.start_ns = now_ns();
    std::int64_t switches = switches_now();
    long total = config_.warmup + config_.messages;
    std::size_t size = config_.message_size;
    for (long i = 0; i < total; ++i) {
      std::size_t got = in->receive(buffer_.data(), buffer_.size());
      if (read_stamp(buffer_.data(), got, size) != stamp(0, static_cast<std::uint64_t>(i)))
        throw std::runtime_error("pong: wrong message at round trip " + std::to_string(i));
      write_stamp(buffer_.data(), size, stamp(1, static_cast<std::uint64_t>(i)));
      out->send(buffer_.data(), size);
    }
    report.switches = switches_now() - switches;
    report.end_ns = now_ns();
    report.received = total;
  }

  void produce(int number, ChildReport& report) {
    auto out = forward_.open_sender(number);
    announce_ready_and_wait(control_.ready, control_.go);
    report.start_ns = now_ns();
    std::int64_t switches = switches_now();
    std::size_t size = config_.message_size;
    auto producer = static_cast<std::uint64_t>(number);
    for (long i = 0; i < config_.messages; ++i) {
      write_stamp(buffer_.data(), size, stamp(producer, static_cast<std::uint64_t>(i)));
      out->send(buffer_.data(), size);
    }
    // acq_rel: the last producer's end markers go after every producer's last send returned
    // (each increment happens after its sends; the last one reads all of them).
    if (control_.producers_done.fetch_add(1, std::memory_order_acq_rel) + 1 ==
        static_cast<std::uint32_t>(config_.producers)) {
      write_stamp(buffer_.data(), size, stamp(kEndProducer, 0));
      for (int c = 0; c < config_.consumers; ++c) out->send(buffer_.data(), size);
    }
    report.switches = switches_now() - switches;
    report.end_ns = now_ns();
  }

  void consume(int number, ChildReport& report) {
    auto in = forward_.open_receiver(number);
    std::size_t size = config_.message_size;
    auto producers = static_cast<std::size_t>(config_.producers);
    std::vector<std::int64_t> last(producers, -1);
    std::byte* bitmap = bitmaps_ == nullptr ? nullptr
                                            : bitmaps_ + static_cast<std::size_t>(number) *
                                                             producers * bitmap_bytes_;
    announce_ready_and_wait(control_.ready, control_.go);
    report.start_ns = now_ns();
    std::int64_t switches = switches_now();
    std::int64_t received = 0;
    for (;;) {
      std::size_t got = in->receive(buffer_.data(), buffer_.size());
      std::uint64_t word = read_stamp(buffer_.data(), got, size);
      std::uint64_t producer = word >> kSequenceBits;
      auto sequence = static_cast<std::int64_t>(word & ((std::uint64_t{1} << kSequenceBits) - 1));
      if (producer == kEndProducer) break;
      if (producer >= producers || sequence >= config_.messages)
        throw std::runtime_error("consumer: message with an impossible stamp");
      std::int64_t& previous = last[producer];
      if (config_.consumers == 1 ? sequence != previous + 1 : sequence <= previous)
        throw std::runtime_error("consumer: producer " + std::to_string(producer) + " sequence " +
                                 std::to_string(sequence) + " after " + std::to_string(previous) +
                                 " (lost, duplicated or reordered)");
      previous = sequence;
      if (bitmap != nullptr) {
        auto bit = static_cast<std::size_t>(sequence);
        std::byte& cell = bitmap[producer * bitmap_bytes_ + bit / 8];
        cell |= std::byte{static_cast<unsigned char>(1u << (bit % 8))};
      }
      ++received;
    }
    report.switches = switches_now() - switches;
    report.end_ns = now_ns();
    report.received = received;
    if (config_.consumers == 1 && received != config_.messages * config_.producers)
      throw std::runtime_error("consumer: received " + std::to_string(received) + " messages");
  }

  Link& forward_;
  Link* backward_;
  const RunConfig& config_;
  Control& control_;
  std::byte* bitmaps_;
  std::size_t bitmap_bytes_;
  std::vector<std::byte> buffer_;
};

[[noreturn]] void child_main(Body& body, const Child& child, Control& control, bool clean_exit) {
  pin_to(child.cpu);
  int code = 0;
  try {
    body.run(child);
  } catch (const std::exception& error) {
    std::snprintf(control.reports[child.index].error, sizeof control.reports[0].error, "%s",
                  error.what());
    code = 1;
  }
  if (code != 0 && control.reports[child.index].error[0] == 0)
    std::snprintf(control.reports[child.index].error, sizeof control.reports[0].error, "failed");
  std::fflush(nullptr);
  if (clean_exit) std::exit(code);
  _exit(code);
}

std::vector<Child> plan_children(const RunConfig& config) {
  std::vector<Child> children;
  int producers = config.mode == Mode::latency ? 1 : config.producers;
  int consumers = config.mode == Mode::latency ? 1 : config.consumers;
  auto cpus = static_cast<int>(config.cpus.size());
  int half = std::max(1, cpus / 2);
  for (int i = 0; i < producers + consumers; ++i) {
    Child child{i, i < producers ? 0 : 1, i < producers ? i : i - producers};
    if (cpus >= 2) {
      int slot = producers + consumers <= cpus ? i
                 : child.role == 0             ? child.number % half
                                               : half + child.number % (cpus - half);
      child.cpu = config.cpus[static_cast<std::size_t>(slot)];
    }
    children.push_back(child);
  }
  return children;
}

}  // namespace

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::latency:
      return "latency";
    case Mode::stream:
      return "stream";
    case Mode::mpmc:
      return "mpmc";
    case Mode::bulk:
      return "bulk";
    case Mode::rpc:
      return "rpc";
    case Mode::rpc_fanout:
      return "rpc-fanout";
  }
  return "?";
}

RunResult run_once(Transport& transport, const RunConfig& config) {
  static int next_link_id = 0;
  RunResult result;
  std::vector<Child> children = plan_children(config);
  if (static_cast<int>(children.size()) > kMaxChildren) {
    result.error = "too many processes";
    return result;
  }
  int producers = config.mode == Mode::latency ? 1 : config.producers;
  int consumers = config.mode == Mode::latency ? 1 : config.consumers;
  LinkShape shape{config.message_size, producers, consumers, next_link_id++};
  std::unique_ptr<Link> forward, backward;
  try {
    forward = transport.create_link(shape);
    if (config.mode == Mode::latency) {
      shape.id = next_link_id++;
      backward = transport.create_link(shape);
    }
  } catch (const std::exception& error) {
    result.error = std::string("set-up: ") + error.what();
    return result;
  }
  SharedMapping control_memory(sizeof(Control));
  auto* control = new (control_memory.data()) Control{};
  // Exactly-once across several consumers: one bitmap per (consumer, producer).
  std::size_t bitmap_bytes = 0;
  std::unique_ptr<SharedMapping> bitmaps;
  if (config.mode != Mode::latency && consumers > 1) {
    bitmap_bytes = static_cast<std::size_t>(config.messages + 7) / 8;
    bitmaps = std::make_unique<SharedMapping>(bitmap_bytes * static_cast<std::size_t>(producers) *
                                              static_cast<std::size_t>(consumers));
  }
  Body body(*forward, backward.get(), config, *control,
            bitmaps ? static_cast<std::byte*>(bitmaps->data()) : nullptr, bitmap_bytes);

  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (const Child& child : children) {
    pid_t pid = fork();
    if (pid < 0) {
      result.error = std::string("fork: ") + std::strerror(errno);
      break;
    }
    if (pid == 0) child_main(body, child, *control, transport.needs_clean_exit());
    pids.push_back(pid);
  }
  Supervision children_of_run{
      pids,
      &control->ready,
      &control->go,
      config.timeout_seconds,
      [&](std::size_t i) {
        return std::string(children[i].role == 0 ? "producer " : "consumer ") +
               std::to_string(children[i].number);
      },
      [&](std::size_t i) { return std::string(control->reports[children[i].index].error); }};
  if (std::string failure = supervise(children_of_run, result.error); !failure.empty()) {
    result.error = failure;
    return result;
  }

  const ChildReport* reports = control->reports;
  std::int64_t switches = 0;
  for (const Child& child : children) switches += reports[child.index].switches;
  if (config.mode == Mode::latency) {
    const ChildReport& ping = reports[0];
    result.p50_us = ping.p50_ns / 1000;
    result.p99_us = ping.p99_ns / 1000;
    result.p999_us = ping.p999_ns / 1000;
    result.switches_per_message =
        static_cast<double>(switches) / static_cast<double>(config.warmup + config.messages);
    result.seconds = static_cast<double>(ping.end_ns - ping.start_ns) / 1e9;
    result.messages_per_second = 2 * static_cast<double>(ping.received) / result.seconds;
    result.ok = true;
    return result;
  }
  std::int64_t start = INT64_MAX, end = 0, received = 0;
  for (const Child& child : children) {
    if (child.role == 0) start = std::min(start, reports[child.index].start_ns);
    if (child.role == 1) {
      end = std::max(end, reports[child.index].end_ns);
      received += reports[child.index].received;
    }
  }
  long total = config.messages * producers;
  if (received != total) {
    result.error = "received " + std::to_string(received) + " of " + std::to_string(total);
    return result;
  }
  if (bitmaps) {
    // Disjoint and complete: with the exact count above, full coverage means exactly once.
    const auto* bits = static_cast<const std::byte*>(bitmaps->data());
    std::size_t per_consumer = bitmap_bytes * static_cast<std::size_t>(producers);
    for (std::size_t p = 0; p < static_cast<std::size_t>(producers); ++p) {
      for (long s = 0; s < config.messages; ++s) {
        auto bit = static_cast<std::size_t>(s);
        int owners = 0;
        for (std::size_t c = 0; c < static_cast<std::size_t>(consumers); ++c) {
          auto cell = bits[c * per_consumer + p * bitmap_bytes + bit / 8];
          owners += std::to_integer<int>(cell >> (bit % 8)) & 1;
        }
        if (owners != 1) {
          result.error = "producer " + std::to_string(p) + " message " + std::to_string(s) +
                         " delivered " + std::to_string(owners) + " times";
          return result;
        }
      }
    }
  }
  result.seconds = static_cast<double>(end - start) / 1e9;
  result.messages_per_second = static_cast<double>(total) / result.seconds;
  result.switches_per_message = static_cast<double>(switches) / static_cast<double>(total);
  result.ok = true;
  return result;
}

}  // namespace xproc::bench
