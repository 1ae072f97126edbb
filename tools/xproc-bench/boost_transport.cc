// Row "boost-mq": boost::interprocess::message_queue (header-only, libboost-dev), created by
// name in the parent, opened by name in each child; capacity about 1 MiB of messages (at least
// 16, at most 4096). Its blocking send/receive use a process-shared mutex and condition
// variables inside the queue's shared memory.
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <stdexcept>

#include "transport.h"

namespace xproc::bench {
namespace {

namespace ipc = boost::interprocess;

class BoostSender final : public Sender {
 public:
  explicit BoostSender(const std::string& name) : queue_(ipc::open_only, name.c_str()) {}
  void send(const std::byte* data, std::size_t size) override { queue_.send(data, size, 0); }

 private:
  ipc::message_queue queue_;
};

class BoostReceiver final : public Receiver {
 public:
  explicit BoostReceiver(const std::string& name) : queue_(ipc::open_only, name.c_str()) {}
  std::size_t receive(std::byte* data, std::size_t capacity) override {
    ipc::message_queue::size_type got = 0;
    unsigned priority = 0;
    queue_.receive(data, capacity, got, priority);
    return got;
  }

 private:
  ipc::message_queue queue_;
};

class BoostLink final : public Link {
 public:
  explicit BoostLink(const LinkShape& shape)
      : name_("xproc-bench-" + std::to_string(getpid()) + "-" + std::to_string(shape.id)) {
    std::size_t size = std::max<std::size_t>(shape.message_size, 1);
    std::size_t count = std::clamp<std::size_t>((std::size_t{1} << 20) / size, 16, 4096);
    ipc::message_queue::remove(name_.c_str());
    ipc::message_queue queue(ipc::create_only, name_.c_str(), count, size);
  }
  ~BoostLink() override { ipc::message_queue::remove(name_.c_str()); }
  std::unique_ptr<Sender> open_sender(int) override { return std::make_unique<BoostSender>(name_); }
  std::unique_ptr<Receiver> open_receiver(int) override {
    return std::make_unique<BoostReceiver>(name_);
  }

 private:
  std::string name_;
};

class BoostTransport final : public Transport {
 public:
  std::string name() const override { return "boost-mq"; }
  std::string description() const override {
    return "Boost.Interprocess message_queue, ~1 MiB of messages";
  }
  std::string unsupported(const LinkShape&) const override { return {}; }
  std::unique_ptr<Link> create_link(const LinkShape& shape) override {
    return std::make_unique<BoostLink>(shape);
  }
};

const TransportRegistration registration{60, [] { return std::make_unique<BoostTransport>(); }};

}  // namespace
}  // namespace xproc::bench
