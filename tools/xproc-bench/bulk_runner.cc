#include "bulk_runner.h"

#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <utility>

#include "children.h"
#include "xproc/sync/detail/spin.h"
#include "xproc/sys/futex.h"

namespace xproc::bench {

// ---- registry -----------------------------------------------------------------------------

namespace {

struct BulkEntry {
  int rank;
  std::function<std::unique_ptr<BulkTransport>()> factory;
};

std::vector<BulkEntry>& bulk_registry() {
  static std::vector<BulkEntry> entries;
  return entries;
}

}  // namespace

BulkTransportRegistration::BulkTransportRegistration(
    int rank, std::function<std::unique_ptr<BulkTransport>()> factory) {
  bulk_registry().push_back({rank, std::move(factory)});
}

std::vector<std::unique_ptr<BulkTransport>> make_registered_bulk_transports() {
  std::vector<BulkEntry> entries = bulk_registry();
  std::stable_sort(entries.begin(), entries.end(),
                   [](const BulkEntry& a, const BulkEntry& b) { return a.rank < b.rank; });
  std::vector<std::unique_ptr<BulkTransport>> transports;
  for (const auto& entry : entries) transports.push_back(entry.factory());
  return transports;
}

std::vector<std::string> bulk_transport_names() {
  std::vector<std::string> names;
  for (const auto& t : make_registered_bulk_transports()) names.push_back(t->name());
  return names;
}

std::vector<std::string> bulk_transport_descriptions() {
  std::vector<std::string> lines;
  for (const auto& t : make_registered_bulk_transports()) {
    char line[512];
    std::snprintf(line, sizeof line, "%-16s (bulk) %s", t->name().c_str(),
                  t->description().c_str());
    lines.emplace_back(line);
  }
  return lines;
}

// ---- helpers of bulk_transport.h ------------------------------------------------------------

namespace {
constexpr auto kShared = sys::FutexScope::process_shared;
// Before parking: ~64 rounds of up to 64 pauses (tens of microseconds), then a few yields (a
// consumer sharing its CPU with another consumer lets it run).
constexpr std::uint32_t kSpinRounds = 64;
constexpr std::uint32_t kYieldRounds = 4;

bool reached(std::uint32_t value, std::uint32_t target) {
  return static_cast<std::int32_t>(value - target) >= 0;
}
}  // namespace

void HandoffCounter::advance(std::uint32_t by) {
  // seq_cst: a store-load pair with wait_reach (publish, then read `sleeping`; the waiter sets
  // `sleeping`, then re-reads `value`): one of the two sees the other, so no wake-up is lost.
  // It also releases the payload written before it (the waiter's loads acquire).
  value.fetch_add(by, std::memory_order_seq_cst);
  // seq_cst: the load half of the pair above.
  if (sleeping.load(std::memory_order_seq_cst) != 0) (void)sys::futex_wake(value, INT_MAX, kShared);
}

void HandoffCounter::wait_reach(std::uint32_t target) {
  // acquire: pairs with advance's fetch_add (the payload published before it is visible).
  auto ready = [&] { return reached(value.load(std::memory_order_acquire), target); };
  if (sync::detail::spin_until(ready, kSpinRounds) ||
      sync::detail::yield_until(ready, kYieldRounds))
    return;
  for (;;) {
    // seq_cst: announce, then re-check value (the store-load pair with advance).
    sleeping.store(1, std::memory_order_seq_cst);
    // seq_cst: the re-check after the announcement; acquire for the payload.
    std::uint32_t seen = value.load(std::memory_order_seq_cst);
    if (reached(seen, target)) break;
    (void)sys::futex_wait(value, seen, kShared);  // spurious or stale: loop re-checks
  }
  // relaxed: only saves the other side a futex call; a stale 1 costs one wake, nothing else.
  sleeping.store(0, std::memory_order_relaxed);
}

PrivateBuffer::PrivateBuffer(std::size_t size) : size_(size) {
  void* memory = mmap(nullptr, std::max<std::size_t>(size, 1), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) throw_errno("mmap of a private buffer");
  data_ = static_cast<std::byte*>(memory);
  prefault(span());
}

void prefault(std::span<std::byte> range) {
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(range.data());
  const std::uintptr_t first = (begin + page - 1) / page * page;
  const std::uintptr_t last = (begin + range.size()) / page * page;
  if (first >= last) return;
  // Populate first (one system call), then touch each page: under a hypervisor with shadow
  // page tables (this VM) a populated page still traps on its first access from each process
  // (measured: the first pass over 256 MiB at 0.3-0.5 GB/s, later ones at 3-9 GB/s).
  (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE);
  for (std::uintptr_t at = first; at < last; at += page) {
    auto* byte = reinterpret_cast<volatile std::byte*>(at);
    *byte = *byte;  // the same value: contents unchanged (nobody writes payloads before the start)
  }
}

PrivateBuffer::~PrivateBuffer() {
  if (data_ != nullptr) munmap(data_, std::max<std::size_t>(size_, 1));
}

PrivateBuffer::PrivateBuffer(PrivateBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

PrivateBuffer& PrivateBuffer::operator=(PrivateBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) munmap(data_, std::max<std::size_t>(size_, 1));
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

// ---- one run ------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxConsumers = 16;
constexpr std::uint64_t kEndMarker = ~std::uint64_t{0};
constexpr std::uint64_t kMix = 0x9E3779B97F4A7C15ull;

struct BulkReport {
  std::int64_t start_ns;  // producer: first measured payload
  std::int64_t end_ns;    // consumer: after its last measured payload
  std::int64_t switches;  // over the measured window
  std::int64_t received;  // consumer: data payloads (warm-up included)
  char error[240];
};

struct BulkControl {
  std::atomic<std::uint32_t> ready;  // futex word: children set up
  std::atomic<std::uint32_t> go;     // futex word: 0 -> 1 starts them
  BulkReport reports[kMaxConsumers + 1];
};

struct BulkRun {
  std::size_t payload = 0;
  int consumers = 1;
  long warmup = 0;
  long measured = 0;
  double timeout_seconds = 30;
  std::vector<int> cpus;
};

// Word 0: the sequence; word i >= 1: base + i with base keyed by the sequence.
std::uint64_t pattern_base(std::uint64_t sequence) {
  return (sequence + 1) * kMix;
}

void produce_payload(std::span<std::byte> payload, std::uint64_t sequence) {
  auto* words = reinterpret_cast<std::uint64_t*>(payload.data());
  const std::size_t n = payload.size() / sizeof(std::uint64_t);
  const std::uint64_t base = pattern_base(sequence);
  words[0] = sequence;
  for (std::size_t i = 1; i < n; ++i) words[i] = base + i;
}

// Reads every word; throws unless the payload is the one its word 0 names, intact.
std::uint64_t consume_payload(std::span<const std::byte> payload, std::size_t expected_size) {
  if (payload.size() != expected_size)
    throw std::runtime_error("payload of " + std::to_string(payload.size()) + " bytes, expected " +
                             std::to_string(expected_size));
  const auto* words = reinterpret_cast<const std::uint64_t*>(payload.data());
  const std::size_t n = payload.size() / sizeof(std::uint64_t);
  const std::uint64_t sequence = words[0];
  if (sequence == kEndMarker) return sequence;
  std::uint64_t sum = 0;
  for (std::size_t i = 1; i < n; ++i) sum += words[i];
  const std::uint64_t count = n - 1;
  // sum of (base + i), i = 1..count, modulo 2^64.
  const std::uint64_t want =
      count * pattern_base(sequence) +
      (count % 2 == 0 ? (count / 2) * (count + 1) : count * ((count + 1) / 2));
  if (sum != want)
    throw std::runtime_error("payload " + std::to_string(sequence) +
                             ": checksum mismatch (torn or wrong bytes)");
  return sequence;
}

class BulkBody {
 public:
  BulkBody(BulkLink& link, const BulkRun& run, BulkControl& control, std::byte* marks)
      : link_(link), run_(run), control_(control), marks_(marks) {}

  void producer(bool also_consume) {
    BulkReport& report = control_.reports[0];
    auto sender = link_.open_sender();
    std::unique_ptr<BulkReceiver> receiver;
    if (also_consume) receiver = link_.open_receiver(0);
    announce_ready_and_wait(control_.ready, control_.go);
    const long total = run_.warmup + run_.measured;
    std::int64_t switches = switches_now();
    report.start_ns = now_ns();
    for (long i = 0; i < total; ++i) {
      if (i == run_.warmup) {
        switches = switches_now();
        report.start_ns = now_ns();
      }
      std::span<std::byte> payload = sender->prepare();
      if (payload.size() != run_.payload) throw std::runtime_error("prepare: wrong size");
      produce_payload(payload, static_cast<std::uint64_t>(i));
      sender->commit();
      if (receiver) {
        std::uint64_t got = consume_payload(receiver->receive(), run_.payload);
        receiver->release();
        if (got != static_cast<std::uint64_t>(i))
          throw std::runtime_error("memcpy row: payload " + std::to_string(got) + " at " +
                                   std::to_string(i));
        control_.reports[1].received = i + 1;
        control_.reports[1].end_ns = now_ns();
      }
    }
    if (run_.consumers > 1) {
      for (int c = 0; c < run_.consumers; ++c) {
        std::span<std::byte> payload = sender->prepare();
        std::memcpy(payload.data(), &kEndMarker, sizeof kEndMarker);
        sender->commit();
      }
    }
    sender->flush();
    report.switches = switches_now() - switches;
    report.end_ns = now_ns();
  }

  void consumer(int number) {
    BulkReport& report = control_.reports[1 + number];
    auto receiver = link_.open_receiver(number);
    announce_ready_and_wait(control_.ready, control_.go);
    const long total = run_.warmup + run_.measured;
    std::int64_t switches = switches_now();
    std::int64_t received = 0;
    std::int64_t last = -1;
    report.end_ns = now_ns();
    for (;;) {
      if (run_.consumers == 1 && received == total) break;
      std::uint64_t got = consume_payload(receiver->receive(), run_.payload);
      receiver->release();
      if (got == kEndMarker) break;
      auto sequence = static_cast<std::int64_t>(got);
      if (sequence >= total) throw std::runtime_error("consumer: impossible sequence");
      if (run_.consumers == 1 ? sequence != last + 1 : sequence <= last)
        throw std::runtime_error("consumer: payload " + std::to_string(sequence) + " after " +
                                 std::to_string(last) + " (lost, duplicated or reordered)");
      last = sequence;
      ++received;
      if (marks_ != nullptr)
        marks_[static_cast<std::size_t>(number) * static_cast<std::size_t>(total) +
               static_cast<std::size_t>(sequence)] = std::byte{1};
      // The measured window of this process starts after its last warm-up payload.
      if (sequence < run_.warmup) switches = switches_now();
      report.end_ns = now_ns();
    }
    report.switches = switches_now() - switches;
    report.received = received;
  }

 private:
  BulkLink& link_;
  const BulkRun& run_;
  BulkControl& control_;
  std::byte* marks_;
};

RunResult run_bulk_once(BulkTransport& transport, const BulkRun& run) {
  static int next_id = 0;
  RunResult result;
  BulkShape shape{run.payload, run.consumers, next_id++};
  std::unique_ptr<BulkLink> link;
  try {
    link = transport.create_link(shape);
  } catch (const std::exception& error) {
    result.error = std::string("set-up: ") + error.what();
    return result;
  }
  BulkRun config = run;
  config.warmup = std::max<long>(config.warmup, link->warmup_messages());
  const long total = config.warmup + config.measured;
  SharedMapping control_memory(sizeof(BulkControl));
  auto* control = new (control_memory.data()) BulkControl{};
  std::unique_ptr<SharedMapping> marks;
  if (config.consumers > 1)
    marks = std::make_unique<SharedMapping>(static_cast<std::size_t>(total) *
                                            static_cast<std::size_t>(config.consumers));
  BulkBody body(*link, config, *control, marks ? static_cast<std::byte*>(marks->data()) : nullptr);

  const bool single = transport.single_process();
  const int processes = single ? 1 : 1 + config.consumers;
  std::vector<int> cpu_of(static_cast<std::size_t>(processes), -1);
  const auto cpus = static_cast<int>(config.cpus.size());
  for (int i = 0; cpus >= 2 && i < processes; ++i) {
    // The producer on the first CPU; consumers on their own CPUs when there are enough, else
    // spread over the others (as the mpmc mode places consumers).
    int slot = processes <= cpus ? i : i == 0 ? 0 : 1 + (i - 1) % (cpus - 1);
    cpu_of[static_cast<std::size_t>(i)] = config.cpus[static_cast<std::size_t>(slot)];
  }

  std::fflush(nullptr);
  std::vector<pid_t> pids;
  std::string failure;
  for (int i = 0; i < processes; ++i) {
    pid_t pid = fork();
    if (pid < 0) {
      failure = std::string("fork: ") + std::strerror(errno);
      break;
    }
    if (pid == 0) {
      pin_to(cpu_of[static_cast<std::size_t>(i)]);
      int code = 0;
      BulkReport& report = control->reports[i];
      try {
        if (i == 0)
          body.producer(single);
        else
          body.consumer(i - 1);
      } catch (const std::exception& error) {
        std::snprintf(report.error, sizeof report.error, "%s", error.what());
        code = 1;
      }
      std::fflush(nullptr);
      _exit(code);
    }
    pids.push_back(pid);
  }
  Supervision children_of_run{
      pids,
      &control->ready,
      &control->go,
      config.timeout_seconds,
      [](std::size_t i) {
        return i == 0 ? std::string("producer") : "consumer " + std::to_string(i - 1);
      },
      [&](std::size_t i) { return std::string(control->reports[i].error); }};
  failure = supervise(children_of_run, failure);
  if (!failure.empty()) {
    result.error = failure;
    return result;
  }

  const BulkReport* reports = control->reports;
  std::int64_t switches = reports[0].switches, end = 0, received = 0;
  for (int c = 0; c < config.consumers; ++c) {
    if (!single) switches += reports[1 + c].switches;
    end = std::max(end, reports[1 + c].end_ns);
    received += reports[1 + c].received;
  }
  if (received != total) {
    result.error = "received " + std::to_string(received) + " of " + std::to_string(total);
    return result;
  }
  if (marks) {
    const auto* bytes = static_cast<const std::byte*>(marks->data());
    for (long s = 0; s < total; ++s) {
      int owners = 0;
      for (int c = 0; c < config.consumers; ++c)
        owners += bytes[static_cast<std::size_t>(c) * static_cast<std::size_t>(total) +
                        static_cast<std::size_t>(s)] != std::byte{0};
      if (owners != 1) {
        result.error =
            "payload " + std::to_string(s) + " consumed " + std::to_string(owners) + " times";
        return result;
      }
    }
  }
  result.seconds = static_cast<double>(end - reports[0].start_ns) / 1e9;
  if (!(result.seconds > 0)) {
    result.error = "empty measured window";
    return result;
  }
  result.messages_per_second = static_cast<double>(config.measured) / result.seconds;
  result.switches_per_message =
      static_cast<double>(switches) / static_cast<double>(config.measured);
  result.ok = true;
  return result;
}

}  // namespace

std::string bulk_size_label(std::size_t size) {
  if (size >= (1u << 20) && size % (1u << 20) == 0) return std::to_string(size >> 20) + " MiB";
  if (size >= 1024 && size % 1024 == 0) return std::to_string(size / 1024) + " KiB";
  return std::to_string(size) + " B";
}

namespace {

void measure_bulk(BulkTransport& transport, const BulkOptions& options, Row& row) {
  BulkRun run;
  run.payload = row.message_size;
  run.consumers = row.consumers;
  run.timeout_seconds = options.timeout;
  run.cpus = options.cpus;
  run.warmup = 2;
  // Calibration: a short run sizes the measured ones to about --duration each.
  const std::size_t budget = options.quick ? (std::size_t{8} << 20) : (std::size_t{64} << 20);
  run.measured = std::clamp<long>(static_cast<long>(budget / row.message_size), 3, 4096);
  RunResult trial = run_bulk_once(transport, run);
  const double enough = std::min(0.05, options.duration / 4);
  while (trial.ok && trial.seconds < enough && run.measured < 1'000'000) {
    run.measured *= 4;
    trial = run_bulk_once(transport, run);
  }
  if (!trial.ok) {
    row.failure = trial.error;
    return;
  }
  run.measured =
      std::clamp(static_cast<long>(options.duration * trial.messages_per_second), 3L, 1'000'000L);
  for (int r = 0; r < options.repetitions; ++r) {
    RunResult result = run_bulk_once(transport, run);
    if (!result.ok) {
      row.failure = result.error;
      return;
    }
    row.samples.push_back(result);
  }
}

}  // namespace

void run_bulk_rows(const BulkOptions& options, std::vector<Row>& rows) {
  auto all = make_registered_bulk_transports();
  std::vector<BulkTransport*> chosen;
  for (const auto& t : all)
    if (options.transports.empty() ||
        std::find(options.transports.begin(), options.transports.end(), t->name()) !=
            options.transports.end())
      chosen.push_back(t.get());
  const bool tty = isatty(STDERR_FILENO) != 0;
  for (int consumers : options.consumer_counts)
    for (std::size_t size : options.sizes)
      for (BulkTransport* t : chosen) {
        Row row;
        row.transport = t->name();
        row.mode = Mode::bulk;
        row.message_size = size;
        row.producers = 1;
        row.consumers = consumers;
        if (consumers > kMaxConsumers) {
          row.skipped = "more than 16 consumers";
        } else {
          row.skipped = t->unsupported(BulkShape{size, consumers, 0});
        }
        if (row.skipped.empty()) {
          if (tty)
            std::fprintf(stderr, "\r\033[Kbulk %s %s 1->%d", t->name().c_str(),
                         bulk_size_label(size).c_str(), consumers);
          measure_bulk(*t, options, row);
          if (!tty && !options.quick)
            std::fprintf(stderr, "xproc-bench: bulk %s %s 1->%d done\n", t->name().c_str(),
                         bulk_size_label(size).c_str(), consumers);
        }
        rows.push_back(std::move(row));
      }
  if (tty) std::fprintf(stderr, "\r\033[K");
}

}  // namespace xproc::bench
