// Bulk row "xproc-loan": bulk::LoanChannel (include/xproc/bulk/loan_channel.h), zero copies.
// The producer loans a buffer, writes the payload in place and send()s it (a 32-byte descriptor
// travels through the channel); a consumer receive()s the Held, the runner reads it in place and
// release() gives it back. Any number of consumers (the channel is MPMC: each payload to one).
//
// Sizing: one size class of the run's payload size; buffers = clamp(16 MiB / payload, 2, 16) +
// consumers (the producer can work ahead while each consumer holds one). The parent creates the
// anonymous segment in create_link(); each child adopts it through a new open file description
// (adopt(sys::reopen(fd))), which attaches it to the segment's participant table.
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "bulk_transport.h"
#include "xproc/bulk/loan_channel.h"
#include "xproc/sys/file.h"

namespace xproc::bench {
namespace {

constexpr std::uint32_t kParticipants = 32;

[[noreturn]] void fail(std::error_code error, const std::string& what) {
  throw std::system_error(error, "xproc-loan: " + what);
}

std::uint32_t buffers_for(const BulkShape& shape) {
  const std::size_t ahead = std::clamp<std::size_t>((std::size_t{16} << 20) / shape.payload, 2, 16);
  return static_cast<std::uint32_t>(ahead) + static_cast<std::uint32_t>(shape.consumers);
}

class LoanLink final : public BulkLink {
 public:
  explicit LoanLink(const BulkShape& shape)
      : payload_(shape.payload), buffers_(buffers_for(shape)) {
    bulk::LoanChannelConfig config;
    config.channel.capacity_bytes = 4096;
    config.pool.classes = {{static_cast<std::uint32_t>(shape.payload), buffers_}};
    shm::SegmentOptions options;
    options.participant_capacity = kParticipants;
    Result<bulk::LoanChannel> created = bulk::LoanChannel::create_anonymous(config, options);
    if (!created) fail(created.error(), "create_anonymous");
    channel_ = std::move(*created);
  }
  int warmup_messages() const override { return static_cast<int>(buffers_); }
  std::unique_ptr<BulkSender> open_sender() override;
  std::unique_ptr<BulkReceiver> open_receiver(int) override;

  bulk::LoanChannel adopt() const {
    Result<sys::FileDescriptor> fd = sys::reopen(channel_.segment().fd());
    if (!fd) fail(fd.error(), "reopen of the segment descriptor");
    shm::SegmentOptions options;
    options.participant_capacity = kParticipants;
    Result<bulk::LoanChannel> adopted = bulk::LoanChannel::adopt(std::move(*fd), options);
    if (!adopted) fail(adopted.error(), "adopt");
    return std::move(*adopted);
  }

  std::size_t payload_;
  std::uint32_t buffers_;
  bulk::LoanChannel channel_;
};

class LoanSender final : public BulkSender {
 public:
  LoanSender(bulk::LoanChannel channel, std::size_t payload)
      : channel_(std::move(channel)), payload_(payload) {
    prefault(channel_.segment().body());  // which buffer a loan gets is the pool's choice
  }
  std::span<std::byte> prepare() override {
    Result<bulk::Loan> loan = channel_.loan(payload_);
    if (!loan) fail(loan.error(), "loan");
    loan_ = std::move(*loan);
    return loan_.data();
  }
  void commit() override {
    if (std::error_code error = channel_.send(std::move(loan_))) fail(error, "send");
  }

 private:
  bulk::LoanChannel channel_;
  std::size_t payload_;
  bulk::Loan loan_;
};

class LoanReceiver final : public BulkReceiver {
 public:
  explicit LoanReceiver(bulk::LoanChannel channel) : channel_(std::move(channel)) {
    prefault(channel_.segment().body());
  }
  std::span<const std::byte> receive() override {
    Result<bulk::Held> held = channel_.receive();
    if (!held) fail(held.error(), "receive");
    held_ = std::move(*held);
    return held_.data();
  }
  void release() override {
    if (std::error_code error = held_.give_back()) fail(error, "give_back");
  }

 private:
  bulk::LoanChannel channel_;
  bulk::Held held_;
};

std::unique_ptr<BulkSender> LoanLink::open_sender() {
  return std::make_unique<LoanSender>(adopt(), payload_);
}
std::unique_ptr<BulkReceiver> LoanLink::open_receiver(int) {
  return std::make_unique<LoanReceiver>(adopt());
}

class LoanTransport final : public BulkTransport {
 public:
  std::string name() const override { return "xproc-loan"; }
  std::string description() const override {
    return "bulk::LoanChannel: loan, write in place, send; receive, read in place, give back (0 "
           "copies)";
  }
  std::string unsupported(const BulkShape& shape) const override {
    if (shape.payload > bulk::kMaxBufferSize) return "payload above the pool's 1 GiB buffer limit";
    if (shape.consumers + 2 > static_cast<int>(kParticipants)) return "too many consumers";
    return {};
  }
  std::unique_ptr<BulkLink> create_link(const BulkShape& shape) override {
    return std::make_unique<LoanLink>(shape);
  }
};

const BulkTransportRegistration loan_registration{60,
                                                  [] { return std::make_unique<LoanTransport>(); }};

}  // namespace
}  // namespace xproc::bench
