// Row "spsc-ring": the hardware floor. A single-producer single-consumer ring of fixed-size
// slots in MAP_SHARED memory; both sides busy-poll (never sleep), so a message costs two
// memcpy and a few cache-line transfers. Only one sender and one receiver, and only sensible
// when each has a CPU of its own (the runner pins them).
//
// Shared layout (offsets from the mapping start):
//   0    std::atomic<uint64_t> head  (messages consumed; written by the receiver)
//   64   std::atomic<uint64_t> tail  (messages produced; written by the sender)
//   128  slots[count], each `stride` bytes: uint64_t size, then the message bytes
// Ring capacity: about 1 MiB of slots (at least 4, at most 16384).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "transport.h"
#include "xproc/sync/detail/spin.h"

namespace xproc::bench {
namespace {

constexpr std::size_t kSlotsOffset = 128;
constexpr std::size_t kRingBytes = std::size_t{1} << 20;

struct RingHeader {
  alignas(64) std::atomic<std::uint64_t> head;
  alignas(64) std::atomic<std::uint64_t> tail;
};
static_assert(sizeof(RingHeader) == kSlotsOffset &&
              std::atomic<std::uint64_t>::is_always_lock_free);

struct Geometry {
  std::size_t stride;
  std::uint64_t count;
  std::size_t capacity;  // message bytes per slot
};

class RingSender final : public Sender {
 public:
  RingSender(RingHeader* header, std::byte* slots, Geometry geometry)
      : header_(header), slots_(slots), geometry_(geometry) {}
  void send(const std::byte* data, std::size_t size) override {
    if (size > geometry_.capacity) throw std::runtime_error("spsc-ring: message too large");
    while (tail_ - cached_head_ >= geometry_.count) {
      // acquire: pairs with the receiver's release store of head, so its copy out of the slot
      // we are about to overwrite has finished.
      cached_head_ = header_->head.load(std::memory_order_acquire);
      sync::detail::cpu_relax();
    }
    std::byte* slot = slots_ + (tail_ % geometry_.count) * geometry_.stride;
    std::uint64_t length = size;
    std::memcpy(slot, &length, sizeof length);
    std::memcpy(slot + sizeof length, data, size);
    ++tail_;
    // release: publishes the slot's bytes; pairs with the receiver's acquire load of tail.
    header_->tail.store(tail_, std::memory_order_release);
  }

 private:
  RingHeader* header_;
  std::byte* slots_;
  Geometry geometry_;
  std::uint64_t tail_ = 0;
  std::uint64_t cached_head_ = 0;
};

class RingReceiver final : public Receiver {
 public:
  RingReceiver(RingHeader* header, std::byte* slots, Geometry geometry)
      : header_(header), slots_(slots), geometry_(geometry) {}
  std::size_t receive(std::byte* data, std::size_t capacity) override {
    while (cached_tail_ == head_) {
      // acquire: pairs with the sender's release store of tail (the slot's bytes).
      cached_tail_ = header_->tail.load(std::memory_order_acquire);
      if (cached_tail_ == head_) sync::detail::cpu_relax();
    }
    const std::byte* slot = slots_ + (head_ % geometry_.count) * geometry_.stride;
    std::uint64_t length = 0;
    std::memcpy(&length, slot, sizeof length);
    if (length > geometry_.capacity || length > capacity)
      throw std::runtime_error("spsc-ring: bad length in slot");
    std::memcpy(data, slot + sizeof length, length);
    ++head_;
    // release: our copy out is done before the sender may reuse the slot (its acquire load).
    header_->head.store(head_, std::memory_order_release);
    return length;
  }

 private:
  RingHeader* header_;
  std::byte* slots_;
  Geometry geometry_;
  std::uint64_t head_ = 0;
  std::uint64_t cached_tail_ = 0;
};

Geometry geometry_for(std::size_t message_size) {
  std::size_t stride = (sizeof(std::uint64_t) + message_size + 63) / 64 * 64;
  std::uint64_t count = std::clamp<std::uint64_t>(kRingBytes / stride, 4, 16384);
  return {stride, count, message_size};
}

class RingLink final : public Link {
 public:
  explicit RingLink(const LinkShape& shape)
      : geometry_(geometry_for(shape.message_size)),
        memory_(kSlotsOffset + geometry_.stride * geometry_.count) {
    header_ = new (memory_.data()) RingHeader{};
  }
  std::unique_ptr<Sender> open_sender(int) override {
    return std::make_unique<RingSender>(header_, slots(), geometry_);
  }
  std::unique_ptr<Receiver> open_receiver(int) override {
    return std::make_unique<RingReceiver>(header_, slots(), geometry_);
  }

 private:
  std::byte* slots() { return static_cast<std::byte*>(memory_.data()) + kSlotsOffset; }
  Geometry geometry_;
  SharedMapping memory_;
  RingHeader* header_;
};

class RingTransport final : public Transport {
 public:
  std::string name() const override { return "spsc-ring"; }
  std::string description() const override {
    return "busy-polling SPSC shared-memory ring, ~1 MiB (hardware floor)";
  }
  std::string unsupported(const LinkShape& shape) const override {
    if (shape.senders > 1 || shape.receivers > 1) return "single producer, single consumer only";
    return {};
  }
  std::unique_ptr<Link> create_link(const LinkShape& shape) override {
    return std::make_unique<RingLink>(shape);
  }
};

const TransportRegistration registration{10, [] { return std::make_unique<RingTransport>(); }};

}  // namespace
}  // namespace xproc::bench
