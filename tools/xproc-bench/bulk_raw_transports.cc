// Bulk floors without xproc's bulk layer:
//
//   memcpy             one process: produce into a private buffer, memcpy it into a second one,
//                      consume that (the floor of one copy; produce, copy, consume run in turn)
//   process_vm_readv   the consumer pulls the producer's private buffer with one raw
//                      process_vm_readv (addresses and pid published in MAP_SHARED memory);
//                      hand-off through two HandoffCounters (produced / consumed), two buffers
//                      in rotation: the floor for cross-memory attach (1 copy)
//   shm-2copy          a ring of 8 chunks of 256 KiB in MAP_SHARED memory: the producer copies its
//                      payload in chunk by chunk, the consumer copies each chunk out into its
//                      private buffer: 2 copies, overlapped on two cores
// Hand-off counters spin briefly, then park on a futex (bulk_transport.h). With C consumers the
// process_vm_readv and shm-2copy rows deal payloads round robin over C lanes (one SPSC hand-off
// per consumer; a slow consumer stalls the producer); memcpy is 1 -> 1 only.
#include <sys/prctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "bulk_transport.h"
#include "transport.h"

namespace xproc::bench {
namespace {

// ---- memcpy -------------------------------------------------------------------------------

class MemcpyLink final : public BulkLink {
 public:
  explicit MemcpyLink(std::size_t payload) : payload_(payload) {}
  std::unique_ptr<BulkSender> open_sender() override;
  std::unique_ptr<BulkReceiver> open_receiver(int) override;

  std::size_t payload_;
  PrivateBuffer source_, target_;  // allocated in the child by open_sender
};

class MemcpySender final : public BulkSender {
 public:
  explicit MemcpySender(MemcpyLink& link) : link_(link) {}
  std::span<std::byte> prepare() override { return link_.source_.span(); }
  void commit() override {
    std::memcpy(link_.target_.data(), link_.source_.data(), link_.payload_);
  }

 private:
  MemcpyLink& link_;
};

class MemcpyReceiver final : public BulkReceiver {
 public:
  explicit MemcpyReceiver(MemcpyLink& link) : link_(link) {}
  std::span<const std::byte> receive() override { return link_.target_.span(); }
  void release() override {}

 private:
  MemcpyLink& link_;
};

std::unique_ptr<BulkSender> MemcpyLink::open_sender() {
  source_ = PrivateBuffer(payload_);
  target_ = PrivateBuffer(payload_);
  return std::make_unique<MemcpySender>(*this);
}
std::unique_ptr<BulkReceiver> MemcpyLink::open_receiver(int) {
  return std::make_unique<MemcpyReceiver>(*this);
}

class MemcpyTransport final : public BulkTransport {
 public:
  std::string name() const override { return "memcpy"; }
  std::string description() const override {
    return "one process: produce, memcpy into a second buffer, consume (the one-copy floor)";
  }
  std::string unsupported(const BulkShape& shape) const override {
    return shape.consumers == 1 ? "" : "one process: 1 -> 1 only";
  }
  std::unique_ptr<BulkLink> create_link(const BulkShape& shape) override {
    return std::make_unique<MemcpyLink>(shape.payload);
  }
  bool single_process() const override { return true; }
};

// ---- per-consumer hand-off lanes ----------------------------------------------------------
// With C consumers the producer deals payloads round robin: payload n goes to consumer n % C,
// through that consumer's own lane (an SPSC hand-off). A static split: the producer waits for a
// slow consumer (the xproc rows hand each payload to whichever consumer is free).

constexpr int kMaxLanes = 16;

// ---- process_vm_readv ---------------------------------------------------------------------

constexpr std::uint32_t kReadvBuffers = 2;  // per lane

struct ReadvLane {
  HandoffCounter produced;  // payloads committed to this lane
  HandoffCounter consumed;  // payloads of this lane the consumer has finished copying out
  std::uint64_t address[kReadvBuffers];  // the producer's buffers (written before the start)
};

struct ReadvShared {
  std::atomic<pid_t> pid;  // the producer's
  ReadvLane lanes[kMaxLanes];
};

class ReadvLink final : public BulkLink {
 public:
  ReadvLink(std::size_t payload, int consumers)
      : payload_(payload),
        consumers_(consumers),
        memory_(sizeof(ReadvShared)),
        shared_(new (memory_.data()) ReadvShared{}) {}
  int warmup_messages() const override { return static_cast<int>(kReadvBuffers) * consumers_; }
  std::unique_ptr<BulkSender> open_sender() override;
  std::unique_ptr<BulkReceiver> open_receiver(int index) override;

  std::size_t payload_;
  int consumers_;
  SharedMapping memory_;
  ReadvShared* shared_;
};

class ReadvSender final : public BulkSender {
 public:
  explicit ReadvSender(ReadvLink& link)
      : link_(link), lanes_(static_cast<std::uint32_t>(link.consumers_)), committed_(lanes_, 0) {
    // Under Yama ptrace_scope 1 a sibling may read us only when we allow it (no-op without Yama).
    (void)prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    for (std::uint32_t lane = 0; lane < lanes_; ++lane)
      for (std::uint32_t i = 0; i < kReadvBuffers; ++i) {
        buffers_.emplace_back(link.payload_);
        link.shared_->lanes[lane].address[i] =
            reinterpret_cast<std::uintptr_t>(buffers_.back().data());
      }
    // release: the addresses above are visible to whoever acquires the pid (and the start
    // barrier orders them anyway).
    link.shared_->pid.store(getpid(), std::memory_order_release);
  }
  std::span<std::byte> prepare() override {
    const std::uint32_t n = committed_[lane_];
    // The buffer is free once the consumer has copied the payload that last used it.
    if (n >= kReadvBuffers) link_.shared_->lanes[lane_].consumed.wait_reach(n - kReadvBuffers + 1);
    return buffers_[lane_ * kReadvBuffers + n % kReadvBuffers].span();
  }
  void commit() override {
    ++committed_[lane_];
    link_.shared_->lanes[lane_].produced.advance();
    lane_ = (lane_ + 1) % lanes_;
  }
  // The consumers read our memory: stay alive until they have copied the last payloads out.
  void flush() override {
    for (std::uint32_t lane = 0; lane < lanes_; ++lane)
      link_.shared_->lanes[lane].consumed.wait_reach(committed_[lane]);
  }

 private:
  ReadvLink& link_;
  std::uint32_t lanes_;
  std::vector<std::uint32_t> committed_;
  std::vector<PrivateBuffer> buffers_;
  std::uint32_t lane_ = 0;
};

class ReadvReceiver final : public BulkReceiver {
 public:
  ReadvReceiver(ReadvLink& link, int index)
      : link_(link), lane_(link.shared_->lanes[index]), buffer_(link.payload_) {}
  std::span<const std::byte> receive() override {
    lane_.produced.wait_reach(count_ + 1);
    // acquire: pairs with the producer's release store (after its addresses).
    const pid_t pid = link_.shared_->pid.load(std::memory_order_acquire);
    std::uint64_t remote_at = lane_.address[count_ % kReadvBuffers];
    std::size_t done = 0;
    while (done < link_.payload_) {
      iovec local{buffer_.data() + done, link_.payload_ - done};
      iovec remote{reinterpret_cast<void*>(remote_at + done), link_.payload_ - done};
      ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
      if (got < 0) {
        if (errno == EINTR) continue;
        throw_errno("process_vm_readv");
      }
      if (got == 0) throw std::runtime_error("process_vm_readv: no progress");
      done += static_cast<std::size_t>(got);
    }
    ++count_;
    lane_.consumed.advance();  // the producer may refill that buffer while we check ours
    return buffer_.span();
  }
  void release() override {}

 private:
  ReadvLink& link_;
  ReadvLane& lane_;
  PrivateBuffer buffer_;
  std::uint32_t count_ = 0;
};

std::unique_ptr<BulkSender> ReadvLink::open_sender() {
  return std::make_unique<ReadvSender>(*this);
}
std::unique_ptr<BulkReceiver> ReadvLink::open_receiver(int index) {
  return std::make_unique<ReadvReceiver>(*this, index);
}

class ReadvTransport final : public BulkTransport {
 public:
  std::string name() const override { return "process_vm_readv"; }
  std::string description() const override {
    return "raw process_vm_readv of the producer's buffer, futex hand-off (the 1-copy CMA floor)";
  }
  std::string unsupported(const BulkShape& shape) const override {
    return shape.consumers <= kMaxLanes ? "" : "16 consumers at most";
  }
  std::unique_ptr<BulkLink> create_link(const BulkShape& shape) override {
    return std::make_unique<ReadvLink>(shape.payload, shape.consumers);
  }
};

// ---- shm-2copy ----------------------------------------------------------------------------

constexpr std::size_t kChunk = std::size_t{256} * 1024;
constexpr std::uint32_t kChunks = 8;  // per lane

struct RingLane {
  HandoffCounter produced;  // chunks copied in
  HandoffCounter consumed;  // chunks copied out
};

class RingLink final : public BulkLink {
 public:
  RingLink(std::size_t payload, int consumers)
      : payload_(payload),
        consumers_(consumers),
        control_(sizeof(RingLane) * static_cast<std::size_t>(consumers)),
        chunks_(kChunk * kChunks * static_cast<std::size_t>(consumers)) {
    for (int c = 0; c < consumers; ++c) new (lane(c)) RingLane{};
  }
  std::unique_ptr<BulkSender> open_sender() override;
  std::unique_ptr<BulkReceiver> open_receiver(int index) override;
  RingLane* lane(int index) const { return static_cast<RingLane*>(control_.data()) + index; }
  std::byte* chunk(int lane_index, std::uint32_t n) const {
    return static_cast<std::byte*>(chunks_.data()) +
           (static_cast<std::size_t>(lane_index) * kChunks + n % kChunks) * kChunk;
  }

  std::size_t payload_;
  int consumers_;
  SharedMapping control_;
  SharedMapping chunks_;
};

class RingSender final : public BulkSender {
 public:
  explicit RingSender(RingLink& link)
      : link_(link), buffer_(link.payload_), count_(static_cast<std::size_t>(link.consumers_), 0) {
    prefault({static_cast<std::byte*>(link.chunks_.data()), link.chunks_.size()});
  }
  std::span<std::byte> prepare() override { return buffer_.span(); }
  void commit() override {
    RingLane& lane = *link_.lane(lane_);
    std::uint32_t& count = count_[static_cast<std::size_t>(lane_)];
    for (std::size_t at = 0; at < link_.payload_; at += kChunk) {
      if (count >= kChunks) lane.consumed.wait_reach(count - kChunks + 1);
      std::memcpy(link_.chunk(lane_, count), buffer_.data() + at,
                  std::min(kChunk, link_.payload_ - at));
      ++count;
      lane.produced.advance();
    }
    lane_ = (lane_ + 1) % link_.consumers_;
  }

 private:
  RingLink& link_;
  PrivateBuffer buffer_;
  std::vector<std::uint32_t> count_;  // chunks per lane
  int lane_ = 0;
};

class RingReceiver final : public BulkReceiver {
 public:
  RingReceiver(RingLink& link, int index)
      : link_(link), index_(index), lane_(*link.lane(index)), buffer_(link.payload_) {
    prefault({link.chunk(index, 0), kChunk * kChunks});
  }
  std::span<const std::byte> receive() override {
    for (std::size_t at = 0; at < link_.payload_; at += kChunk) {
      lane_.produced.wait_reach(count_ + 1);
      std::memcpy(buffer_.data() + at, link_.chunk(index_, count_),
                  std::min(kChunk, link_.payload_ - at));
      ++count_;
      lane_.consumed.advance();
    }
    return buffer_.span();
  }
  void release() override {}

 private:
  RingLink& link_;
  int index_;
  RingLane& lane_;
  PrivateBuffer buffer_;
  std::uint32_t count_ = 0;
};

std::unique_ptr<BulkSender> RingLink::open_sender() {
  return std::make_unique<RingSender>(*this);
}
std::unique_ptr<BulkReceiver> RingLink::open_receiver(int index) {
  return std::make_unique<RingReceiver>(*this, index);
}

class RingTransport final : public BulkTransport {
 public:
  std::string name() const override { return "shm-2copy"; }
  std::string description() const override {
    return "ring of 8 x 256 KiB chunks in MAP_SHARED memory per consumer: copy in, copy out "
           "(2 copies)";
  }
  std::string unsupported(const BulkShape& shape) const override {
    return shape.consumers <= kMaxLanes ? "" : "16 consumers at most";
  }
  std::unique_ptr<BulkLink> create_link(const BulkShape& shape) override {
    return std::make_unique<RingLink>(shape.payload, shape.consumers);
  }
};

const BulkTransportRegistration memcpy_registration{
    0, [] { return std::make_unique<MemcpyTransport>(); }};
const BulkTransportRegistration readv_registration{
    10, [] { return std::make_unique<ReadvTransport>(); }};
const BulkTransportRegistration ring_registration{20,
                                                  [] { return std::make_unique<RingTransport>(); }};

}  // namespace
}  // namespace xproc::bench
