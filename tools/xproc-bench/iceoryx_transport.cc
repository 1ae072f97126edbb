// Row "iceoryx": iceoryx 2.0.3 publish/subscribe (Debian packages iceoryx, libiceoryx-posh-dev).
// The sender loans a chunk, copies its private buffer in and publishes; the receiver sleeps in a
// WaitSet until data arrive, copies the chunk out into its private buffer and releases it.
// No loss: the publisher waits for a full subscriber queue (WAIT_FOR_CONSUMER/BLOCK_PRODUCER).
// One publisher and one subscriber per Link (pub/sub delivers to every subscriber, not MPMC).
// The RouDi daemon (iox-roudi) is started by start() (or an already running one is used) and
// stopped by stop(). Each child registers its own runtime and leaves through exit(), so that
// the runtime deregisters from RouDi.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"
#include "transport.h"

namespace xproc::bench {
namespace {

using namespace std::chrono_literals;

constexpr const char* kRoudiSocket = "/tmp/roudi";  // IOX_UDS_SOCKET_PATH_PREFIX + "roudi"
constexpr std::uint64_t kQueueCapacity = 64;        // below the smallest default mempool count
constexpr auto kConnectTimeout = 5s;

bool roudi_reachable() {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, kRoudiSocket, sizeof address.sun_path - 1);
  bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  close(fd);
  return ok;
}

void init_runtime_once() {
  static bool done = false;
  if (done) return;
  std::string name = "xproc-bench-" + std::to_string(getpid());
  // Debug lines per registration would drown the table: warnings and errors only.
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                           iox::log::LogLevelOutput::kHideLogLevel);
  iox::runtime::PoshRuntime::initRuntime(
      iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name.c_str()));
  done = true;
}

iox::capro::ServiceDescription service(int id) {
  std::string instance = std::to_string(getppid()) + "-" + std::to_string(id);
  return {"xproc-bench", iox::capro::IdString_t(iox::cxx::TruncateToCapacity, instance.c_str()),
          "message"};
}

template <class Ready>
void wait_bounded(Ready ready, const char* what) {
  auto deadline = std::chrono::steady_clock::now() + kConnectTimeout;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error(std::string("iceoryx: timed out waiting for ") + what);
    std::this_thread::sleep_for(1ms);
  }
}

class IceoryxSender final : public Sender {
 public:
  IceoryxSender(int id, const iox::popo::PublisherOptions& options)
      : publisher_(service(id), options) {
    wait_bounded([&] { return publisher_.hasSubscribers(); }, "a subscriber");
  }
  void send(const std::byte* data, std::size_t size) override {
    auto loan = publisher_.loan(static_cast<std::uint32_t>(size));
    if (loan.has_error())
      throw std::runtime_error("iceoryx: loan failed, error " +
                               std::to_string(static_cast<int>(loan.get_error())));
    void* payload = loan.value();
    std::memcpy(payload, data, size);
    publisher_.publish(payload);
  }

 private:
  iox::popo::UntypedPublisher publisher_;
};

iox::popo::PublisherOptions publisher_options() {
  iox::popo::PublisherOptions options;
  options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
  return options;
}

iox::popo::SubscriberOptions subscriber_options() {
  iox::popo::SubscriberOptions options;
  options.queueCapacity = kQueueCapacity;
  options.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
  return options;
}

class IceoryxReceiver final : public Receiver {
 public:
  explicit IceoryxReceiver(int id) : subscriber_(service(id), subscriber_options()) {
    wait_bounded(
        [&] { return subscriber_.getSubscriptionState() == iox::SubscribeState::SUBSCRIBED; },
        "the subscription");
    if (wait_set_.attachState(subscriber_, iox::popo::SubscriberState::HAS_DATA).has_error())
      throw std::runtime_error("iceoryx: WaitSet::attachState failed");
  }
  ~IceoryxReceiver() override {
    wait_set_.detachState(subscriber_, iox::popo::SubscriberState::HAS_DATA);
  }
  std::size_t receive(std::byte* data, std::size_t capacity) override {
    for (;;) {
      auto taken = subscriber_.take();
      if (!taken.has_error()) {
        const void* payload = taken.value();
        std::size_t size = iox::mepoo::ChunkHeader::fromUserPayload(payload)->userPayloadSize();
        if (size > capacity) throw std::runtime_error("iceoryx: message larger than the buffer");
        std::memcpy(data, payload, size);
        subscriber_.release(payload);
        return size;
      }
      if (taken.get_error() != iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE)
        throw std::runtime_error("iceoryx: take failed");
      (void)wait_set_.wait();
    }
  }

 private:
  iox::popo::UntypedSubscriber subscriber_;
  iox::popo::WaitSet<> wait_set_;
};

class IceoryxLink final : public Link {
 public:
  explicit IceoryxLink(const LinkShape& shape) : id_(shape.id) {}
  std::unique_ptr<Sender> open_sender(int) override {
    init_runtime_once();
    return std::make_unique<IceoryxSender>(id_, publisher_options());
  }
  std::unique_ptr<Receiver> open_receiver(int) override {
    init_runtime_once();
    return std::make_unique<IceoryxReceiver>(id_);
  }

 private:
  int id_;
};

class IceoryxTransport final : public Transport {
 public:
  std::string name() const override { return "iceoryx"; }
  std::string description() const override {
    return "iceoryx 2.0.3 untyped pub/sub, WaitSet wake-up (starts iox-roudi)";
  }
  std::string unsupported(const LinkShape& shape) const override {
    if (shape.senders > 1 || shape.receivers > 1)
      return "publish/subscribe: every subscriber gets every message (not MPMC)";
    return {};
  }
  std::unique_ptr<Link> create_link(const LinkShape& shape) override {
    return std::make_unique<IceoryxLink>(shape);
  }
  bool needs_clean_exit() const override { return true; }

  std::string start() override {
    if (roudi_reachable()) return {};  // somebody's RouDi is running: use it, leave it running
    std::fflush(nullptr);
    roudi_ = fork();
    if (roudi_ < 0) return std::string("fork: ") + std::strerror(errno);
    if (roudi_ == 0) {
      FILE* log = std::freopen("/tmp/xproc-bench-roudi.log", "w", stdout);
      if (log != nullptr) dup2(fileno(log), STDERR_FILENO);
      execlp("iox-roudi", "iox-roudi", "--log-level", "warning", static_cast<char*>(nullptr));
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + kConnectTimeout;
    while (!roudi_reachable()) {
      int status = 0;
      if (waitpid(roudi_, &status, WNOHANG) == roudi_) {
        roudi_ = -1;
        return "iox-roudi exited at start (see /tmp/xproc-bench-roudi.log)";
      }
      if (std::chrono::steady_clock::now() > deadline) {
        stop();
        return "iox-roudi did not come up within 5 s";
      }
      std::this_thread::sleep_for(5ms);
    }
    return {};
  }

  void stop() override {
    if (roudi_ <= 0) return;
    kill(roudi_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + kConnectTimeout;
    int status = 0;
    while (waitpid(roudi_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(roudi_, SIGKILL);
        waitpid(roudi_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    roudi_ = -1;
  }

 private:
  pid_t roudi_ = -1;
};

const TransportRegistration registration{70, [] { return std::make_unique<IceoryxTransport>(); }};

}  // namespace
}  // namespace xproc::bench
