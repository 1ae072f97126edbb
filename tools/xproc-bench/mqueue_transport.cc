// Row "posix-mq": a POSIX message queue (mq_open), as many messages as the system allows
// without privileges (/proc/sys/fs/mqueue/msg_max, 10 by default), message size = the run's
// size. Sizes above /proc/sys/fs/mqueue/msgsize_max (8192 by default) are reported unsupported
// rather than raising a system-wide limit.
#include <fcntl.h>
#include <mqueue.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <stdexcept>

#include "transport.h"

namespace xproc::bench {
namespace {

long read_limit(const char* path, long fallback) {
  std::ifstream in(path);
  long value = 0;
  if (in >> value) return value;
  return fallback;
}

class MqSender final : public Sender {
 public:
  explicit MqSender(mqd_t queue) : queue_(queue) {}
  void send(const std::byte* data, std::size_t size) override {
    while (mq_send(queue_, reinterpret_cast<const char*>(data), size, 0) != 0) {
      if (errno != EINTR) throw_errno("mq_send");
    }
  }

 private:
  mqd_t queue_;
};

class MqReceiver final : public Receiver {
 public:
  MqReceiver(mqd_t queue, std::size_t size) : queue_(queue), size_(size) {}
  std::size_t receive(std::byte* data, std::size_t capacity) override {
    // mq_receive demands a buffer of at least mq_msgsize bytes.
    if (capacity < size_) throw std::runtime_error("posix-mq: receive buffer too small");
    for (;;) {
      ssize_t got = mq_receive(queue_, reinterpret_cast<char*>(data), capacity, nullptr);
      if (got >= 0) return static_cast<std::size_t>(got);
      if (errno != EINTR) throw_errno("mq_receive");
    }
  }

 private:
  mqd_t queue_;
  std::size_t size_;
};

class MqLink final : public Link {
 public:
  explicit MqLink(const LinkShape& shape) : size_(shape.message_size) {
    std::string name = "/xproc-bench-" + std::to_string(getpid()) + "-" + std::to_string(shape.id);
    mq_attr attr{};
    attr.mq_maxmsg = read_limit("/proc/sys/fs/mqueue/msg_max", 10);
    attr.mq_msgsize = static_cast<long>(std::max<std::size_t>(shape.message_size, 1));
    queue_ = mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr);
    if (queue_ == static_cast<mqd_t>(-1)) throw_errno("mq_open " + name);
    // The descriptor is inherited across fork(); the name is not needed any more.
    mq_unlink(name.c_str());
  }
  ~MqLink() override { mq_close(queue_); }
  std::unique_ptr<Sender> open_sender(int) override { return std::make_unique<MqSender>(queue_); }
  std::unique_ptr<Receiver> open_receiver(int) override {
    return std::make_unique<MqReceiver>(queue_, size_);
  }

 private:
  mqd_t queue_ = static_cast<mqd_t>(-1);
  std::size_t size_;
};

class MqTransport final : public Transport {
 public:
  std::string name() const override { return "posix-mq"; }
  std::string description() const override {
    return "POSIX message queue, msg_max messages of the run's size";
  }
  std::string unsupported(const LinkShape& shape) const override {
    long max = read_limit("/proc/sys/fs/mqueue/msgsize_max", 8192);
    if (static_cast<long>(shape.message_size) > max)
      return "message larger than /proc/sys/fs/mqueue/msgsize_max (" + std::to_string(max) + ")";
    return {};
  }
  std::unique_ptr<Link> create_link(const LinkShape& shape) override {
    return std::make_unique<MqLink>(shape);
  }
};

const TransportRegistration registration{50, [] { return std::make_unique<MqTransport>(); }};

}  // namespace
}  // namespace xproc::bench
