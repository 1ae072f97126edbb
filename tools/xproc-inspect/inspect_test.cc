// xproc-inspect end to end: segments in every state this tool reports (a live one with an
// attached child process, a stale one whose creator and attacher were SIGKILLed, a corrupt file,
// a channel with queued messages, a channel whose claim lock names a dead consumer), the tool's
// --json output parsed and checked field by field, error exits, and --gc removing only the stale
// one. Every name carries a per-run prefix; --prefix keeps the tool to this run's names.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "child_process.h"
#include "xproc/channel/channel.h"
#include "xproc/channel/layout.h"
#include "xproc/shm/segment.h"
#include "xproc/shm/segment_registry.h"

namespace xproc::inspect {
namespace {

using namespace std::chrono_literals;

// --- a tiny JSON reader (objects, arrays, strings, integers, booleans, null) --------------------
struct Json {
  enum class Type { null, boolean, number, string, array, object } type = Type::null;
  bool flag = false;
  long long number = 0;
  std::string text;
  std::vector<Json> items;
  std::map<std::string, Json> fields;

  const Json& operator[](const std::string& key) const {
    static const Json missing;
    auto it = fields.find(key);
    return it == fields.end() ? missing : it->second;
  }
  bool has(const std::string& key) const { return fields.count(key) != 0; }
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& input) : in_(input) {}
  bool parse(Json& out) {
    if (!value(out)) return false;
    space();
    return pos_ == in_.size();
  }

 private:
  void space() {
    while (pos_ < in_.size() && std::isspace(static_cast<unsigned char>(in_[pos_]))) ++pos_;
  }
  bool literal(const char* word) {
    const std::string w = word;
    if (in_.compare(pos_, w.size(), w) != 0) return false;
    pos_ += w.size();
    return true;
  }
  bool string(std::string& out) {
    if (pos_ >= in_.size() || in_[pos_] != '"') return false;
    ++pos_;
    while (pos_ < in_.size() && in_[pos_] != '"') {
      char c = in_[pos_++];
      if (c == '\\') {
        if (pos_ >= in_.size()) return false;
        char e = in_[pos_++];
        if (e == 'u') {
          if (pos_ + 4 > in_.size()) return false;
          c = static_cast<char>(std::stoi(in_.substr(pos_, 4), nullptr, 16));
          pos_ += 4;
        } else {
          c = e == 'n' ? '\n' : e == 't' ? '\t' : e;
        }
      }
      out += c;
    }
    if (pos_ >= in_.size()) return false;
    ++pos_;
    return true;
  }
  bool value(Json& out) {
    space();
    if (pos_ >= in_.size()) return false;
    const char c = in_[pos_];
    if (c == '{') {
      out.type = Json::Type::object;
      ++pos_;
      space();
      if (pos_ < in_.size() && in_[pos_] == '}') return ++pos_, true;
      for (;;) {
        space();
        std::string key;
        if (!string(key)) return false;
        space();
        if (pos_ >= in_.size() || in_[pos_++] != ':') return false;
        if (!value(out.fields[key])) return false;
        space();
        if (pos_ >= in_.size()) return false;
        if (in_[pos_] == ',') {
          ++pos_;
          continue;
        }
        return in_[pos_++] == '}';
      }
    }
    if (c == '[') {
      out.type = Json::Type::array;
      ++pos_;
      space();
      if (pos_ < in_.size() && in_[pos_] == ']') return ++pos_, true;
      for (;;) {
        out.items.emplace_back();
        if (!value(out.items.back())) return false;
        space();
        if (pos_ >= in_.size()) return false;
        if (in_[pos_] == ',') {
          ++pos_;
          continue;
        }
        return in_[pos_++] == ']';
      }
    }
    if (c == '"') {
      out.type = Json::Type::string;
      return string(out.text);
    }
    if (literal("true")) return out.type = Json::Type::boolean, out.flag = true, true;
    if (literal("false")) return out.type = Json::Type::boolean, true;
    if (literal("null")) return true;
    std::size_t used = 0;
    try {
      out.number = std::stoll(in_.substr(pos_), &used);
    } catch (const std::exception&) {
      return false;
    }
    out.type = Json::Type::number;
    pos_ += used;
    return true;
  }

  const std::string& in_;
  std::size_t pos_ = 0;
};

// --- running the tool ---------------------------------------------------------------------------
struct ToolRun {
  int exit_code = -1;
  std::string out;
  std::string err;
  Json json;
  bool json_ok = false;
};

ToolRun run_tool(const std::string& args) {
  ToolRun run;
  const std::string err_path = "/tmp/xproc-inspect-test-" + std::to_string(getpid()) + ".stderr";
  const std::string command = std::string(XPROC_INSPECT_PATH) + " " + args + " 2>" + err_path;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  std::size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) run.out.append(buffer, got);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (FILE* err = std::fopen(err_path.c_str(), "r")) {
    while ((got = std::fread(buffer, 1, sizeof buffer, err)) > 0) run.err.append(buffer, got);
    std::fclose(err);
  }
  std::remove(err_path.c_str());
  run.json_ok = JsonReader(run.out).parse(run.json);
  return run;
}

// A pipe for handshakes, with bounded reads (a dead child never hangs the test).
struct Pipe {
  Pipe() { EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0); }
  ~Pipe() {
    close(fds[0]);
    close(fds[1]);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  bool put(char byte = 1) const { return write(fds[1], &byte, 1) == 1; }
  int get(int timeout_ms = 10000) const {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return -1;
    char byte = 0;
    return read(fds[0], &byte, 1) == 1 ? byte : -1;
  }
  int fds[2] = {-1, -1};
};

std::string shm_path(const std::string& name) {
  return "/dev/shm/xproc." + name;
}

const Json* find_segment(const Json& list, const std::string& name) {
  for (const Json& segment : list["segments"].items) {
    if (segment["name"].text == name) return &segment;
  }
  return nullptr;
}

class Inspect : public ::testing::Test {
 protected:
  Inspect() {
    static std::atomic<int> counter{0};
    prefix_ = "hinsp-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-";
  }
  ~Inspect() override {
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ignored)) {
      if (entry.path().filename().string().starts_with("xproc." + prefix_)) {
        std::filesystem::remove(entry.path(), ignored);
      }
    }
  }
  std::string name(const char* stem) const { return prefix_ + stem; }
  void write_file(const std::string& segment, const std::string& bytes) const {
    FILE* file = std::fopen(shm_path(segment).c_str(), "w");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), file), bytes.size());
    std::fclose(file);
  }
  std::string prefix_;
};

TEST_F(Inspect, ListsLiveStaleCorruptAndChannelSegmentsAndGcRemovesOnlyTheStaleOne) {
  // live: created here, opened by a child that stays attached until released.
  const std::string live = name("live");
  Result<shm::Segment> live_segment = shm::Segment::create(live, shm::SegmentKind::raw, 4096);
  ASSERT_TRUE(live_segment) << live_segment.error().message();
  Pipe live_ready;
  Pipe live_release;
  test::Child live_child = test::Child::start([&] {
    Result<shm::Segment> mine = shm::Segment::open(live, shm::SegmentKind::raw);
    if (!mine) return 1;
    live_ready.put();
    return live_release.get(20000) == 1 ? 0 : 2;
  });
  ASSERT_EQ(live_ready.get(), 1);

  // stale: created by one child, opened by another, both SIGKILLed while attached.
  const std::string stale = name("stale");
  Pipe created;
  Pipe opened;
  Pipe never;
  test::Child creator = test::Child::start([&] {
    Result<shm::Segment> mine = shm::Segment::create(stale, shm::SegmentKind::raw, 4096);
    if (!mine) return 1;
    created.put();
    never.get(30000);
    return 0;
  });
  ASSERT_EQ(created.get(), 1);
  test::Child attacher = test::Child::start([&] {
    Result<shm::Segment> mine = shm::Segment::open(stale, shm::SegmentKind::raw);
    if (!mine) return 1;
    opened.put();
    never.get(30000);
    return 0;
  });
  ASSERT_EQ(opened.get(), 1);
  const pid_t creator_pid = creator.pid();  // wait() forgets it
  creator.kill(SIGKILL);
  attacher.kill(SIGKILL);
  EXPECT_TRUE(creator.wait(10s).signaled);
  EXPECT_TRUE(attacher.wait(10s).signaled);

  // corrupt: a foreign file under the prefix, and one too short for a header.
  const std::string corrupt = name("corrupt");
  write_file(corrupt, std::string(4096, 'x'));
  const std::string tiny = name("tiny");
  write_file(tiny, "XPROC");
  // another layout version: a copy of the live segment's file with layout_version 99.
  const std::string other = name("other-version");
  std::string bytes;
  {
    FILE* file = std::fopen(shm_path(live).c_str(), "r");
    ASSERT_NE(file, nullptr);
    char buffer[4096];
    std::size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0) bytes.append(buffer, got);
    std::fclose(file);
  }
  ASSERT_GE(bytes.size(), shm::kHeaderSize);
  bytes[offsetof(shm::SegmentHeader, layout_version)] = 99;
  write_file(other, bytes);

  // channel: three messages queued.
  const std::string chan = name("chan");
  channel::ChannelConfig config;
  config.capacity_bytes = 4096;
  config.max_message = 256;
  Result<channel::Channel> channel = channel::Channel::create(chan, config);
  ASSERT_TRUE(channel) << channel.error().message();
  const std::string payload = "hello, inspector";
  for (int i = 0; i < 3; ++i) {
    ASSERT_FALSE((*channel)->send(std::as_bytes(std::span(payload.data(), payload.size()))));
  }

  // The listing.
  ToolRun list = run_tool("--json --prefix " + prefix_);
  ASSERT_EQ(list.exit_code, 0) << list.err;
  ASSERT_TRUE(list.json_ok) << list.out;
  EXPECT_EQ(list.json["segments"].items.size(), 6u) << list.out;

  const Json* l = find_segment(list.json, live);
  ASSERT_NE(l, nullptr);
  EXPECT_TRUE((*l)["ok"].flag);
  EXPECT_EQ((*l)["kind"].text, "raw");
  EXPECT_EQ((*l)["stale"].flag, false);
  EXPECT_EQ((*l)["live_participants"].number, 2);
  EXPECT_EQ((*l)["dead_participants"].number, 0);
  EXPECT_EQ((*l)["creator"]["pid"].number, getpid());
  EXPECT_EQ((*l)["creator"]["uid"].number, static_cast<long long>(geteuid()));
  EXPECT_TRUE((*l)["creator"]["alive"].flag);
  EXPECT_EQ((*l)["lock_bytes"]["gc"].text, "free");
  EXPECT_EQ((*l)["lock_bytes"]["init"].text, "free");
  EXPECT_EQ((*l)["total_size"].number, static_cast<long long>(live_segment->info().total_size));
  EXPECT_EQ((*l)["body_size"].number, 4096);

  const Json* s = find_segment(list.json, stale);
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE((*s)["ok"].flag);
  EXPECT_TRUE((*s)["stale"].flag);
  EXPECT_EQ((*s)["live_participants"].number, 0);
  EXPECT_EQ((*s)["dead_participants"].number, 2);
  EXPECT_EQ((*s)["creator"]["pid"].number, creator_pid);
  EXPECT_EQ((*s)["creator"]["alive"].type, Json::Type::boolean);
  EXPECT_FALSE((*s)["creator"]["alive"].flag);

  for (const std::string& bad : {corrupt, tiny}) {
    const Json* c = find_segment(list.json, bad);
    ASSERT_NE(c, nullptr) << bad;
    EXPECT_FALSE((*c)["ok"].flag);
    EXPECT_EQ((*c)["error"].text, "corrupt_segment") << bad;
  }

  const Json* o = find_segment(list.json, other);
  ASSERT_NE(o, nullptr);
  EXPECT_FALSE((*o)["ok"].flag);
  EXPECT_EQ((*o)["error"].text, "layout_mismatch");

  const Json* c = find_segment(list.json, chan);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ((*c)["kind"].text, "channel");
  EXPECT_EQ((*c)["live_participants"].number, 1);
  const Json& stats = (*c)["channel"];
  EXPECT_TRUE(stats["ok"].flag);
  EXPECT_EQ(stats["capacity"].number, 4096);
  EXPECT_EQ(stats["max_message"].number, 256);
  EXPECT_EQ(stats["depth_messages"].number, 3);
  EXPECT_EQ(stats["depth_bytes"].number,
            3 * static_cast<long long>(channel::detail::record_length(payload.size())));
  EXPECT_EQ(stats["reserved_total"].number, 3);
  EXPECT_EQ(stats["claimed_total"].number, 0);
  EXPECT_EQ(stats["receivers_waiting"].number, 0);
  ASSERT_EQ(stats["locks"].items.size(), 3u);
  for (const Json& lock : stats["locks"].items) EXPECT_EQ(lock["state"].text, "free");

  // One segment in detail: the same object; a corrupt one: exit 1 and a named error.
  ToolRun detail = run_tool("--json " + chan);
  ASSERT_EQ(detail.exit_code, 0) << detail.err;
  ASSERT_TRUE(detail.json_ok) << detail.out;
  EXPECT_EQ(detail.json["channel"]["depth_messages"].number, 3);
  ToolRun bad = run_tool(corrupt);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("xproc-inspect: " + corrupt + ": corrupt_segment"), std::string::npos)
      << bad.err;
  ToolRun missing = run_tool(name("missing"));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("xproc-inspect: " + name("missing") + ": not_found"),
            std::string::npos)
      << missing.err;
  ToolRun text = run_tool("--prefix " + prefix_);
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find(stale), std::string::npos);
  EXPECT_NE(text.out.find("error: corrupt_segment"), std::string::npos) << text.out;

  // --gc --dry-run names only the stale segment and removes nothing.
  ToolRun dry = run_tool("--gc --dry-run --json --prefix " + prefix_);
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  ASSERT_TRUE(dry.json_ok) << dry.out;
  EXPECT_TRUE(dry.json["dry_run"].flag);
  ASSERT_EQ(dry.json["removed"].items.size(), 1u) << dry.out;
  EXPECT_EQ(dry.json["removed"].items[0]["name"].text, stale);
  EXPECT_EQ(dry.json["kept"].items.size(), 5u);
  EXPECT_TRUE(std::filesystem::exists(shm_path(stale)));

  // --gc removes it, keeps the others (live, channel in use; corrupt files left alone).
  ToolRun gc = run_tool("--gc --json --prefix " + prefix_);
  ASSERT_EQ(gc.exit_code, 0) << gc.err;
  ASSERT_TRUE(gc.json_ok) << gc.out;
  EXPECT_FALSE(gc.json["dry_run"].flag);
  ASSERT_EQ(gc.json["removed"].items.size(), 1u) << gc.out;
  EXPECT_EQ(gc.json["removed"].items[0]["name"].text, stale);
  EXPECT_EQ(gc.json["kept"].items.size(), 5u);
  EXPECT_FALSE(std::filesystem::exists(shm_path(stale)));
  for (const std::string& kept : {live, corrupt, tiny, other, chan}) {
    EXPECT_TRUE(std::filesystem::exists(shm_path(kept))) << kept;
  }

  live_release.put();
  EXPECT_TRUE(live_child.wait(10s).ok());
}

TEST_F(Inspect, FlagsAChannelLockWhoseOwnerDied) {
  const std::string chan = name("deadlock");
  channel::ChannelConfig config;
  config.capacity_bytes = 4096;
  config.max_message = 256;
  Result<channel::Channel> channel = channel::Channel::create(chan, config);
  ASSERT_TRUE(channel) << channel.error().message();
  Pipe opened;
  Pipe never;
  test::Child consumer = test::Child::start([&] {
    Result<channel::Channel> mine = channel::Channel::open(chan);
    if (!mine) return 1;
    (*mine)->declare_consumer();
    opened.put();
    never.get(30000);
    return 0;
  });
  ASSERT_EQ(opened.get(), 1);
  (*channel)->declare_producer();
  // The consumer's id: the participant that is not us.
  Result<shm::SegmentReport> report = shm::inspect(chan);
  ASSERT_TRUE(report);
  sync::ParticipantId consumer_id{};
  for (const shm::ParticipantState& p : report->participants) {
    if (!(p.id == channel->segment().self().id())) consumer_id = p.id;
  }
  ASSERT_TRUE(consumer_id.valid());
  consumer.kill(SIGKILL);
  EXPECT_TRUE(consumer.wait(10s).signaled);
  // As if it died inside a claim: its id in the claim lock word (nobody else uses the channel).
  auto* header =
      reinterpret_cast<channel::detail::ChannelHeader*>(channel->segment().body().data());
  header->consumer.lock.store(consumer_id.pack(), std::memory_order_relaxed);

  ToolRun detail = run_tool("--json " + chan);
  ASSERT_EQ(detail.exit_code, 0) << detail.err;
  ASSERT_TRUE(detail.json_ok) << detail.out;
  EXPECT_EQ(detail.json["live_participants"].number, 1);
  EXPECT_EQ(detail.json["dead_participants"].number, 1);
  EXPECT_FALSE(detail.json["stale"].flag);
  const Json& locks = detail.json["channel"]["locks"];
  ASSERT_EQ(locks.items.size(), 3u);
  EXPECT_EQ(locks.items[0]["lock"].text, "reserve");
  EXPECT_EQ(locks.items[0]["state"].text, "free");
  EXPECT_EQ(locks.items[1]["lock"].text, "claim");
  EXPECT_EQ(locks.items[1]["state"].text, "dead");
  EXPECT_EQ(locks.items[1]["owner"]["slot"].number, consumer_id.slot);
  EXPECT_EQ(locks.items[1]["owner"]["generation"].number, consumer_id.generation);
  EXPECT_FALSE(locks.items[1]["owner"]["alive"].flag);
  const Json& roles = detail.json["channel"]["roles"];
  EXPECT_EQ(roles["producers"]["alive"].number, 1);
  EXPECT_EQ(roles["producers"]["dead"].number, 0);
  EXPECT_EQ(roles["consumers"]["alive"].number, 0);
  EXPECT_EQ(roles["consumers"]["dead"].number, 1);
  ToolRun text = run_tool(chan);
  EXPECT_NE(text.out.find("producers 1 alive 0 dead, consumers 0 alive 1 dead"), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("claim   lock held by"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("DEAD"), std::string::npos) << text.out;
  header->consumer.lock.store(0, std::memory_order_relaxed);
}

TEST_F(Inspect, AnotherUsersPrivateSegmentIsListedAsPermissionDenied) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the tool as another user";
  const std::string secret = name("secret");
  Result<shm::Segment> segment = shm::Segment::create(secret, shm::SegmentKind::raw, 4096);
  ASSERT_TRUE(segment) << segment.error().message();  // mode 0600, owned by root
  const std::string prefix = prefix_;
  test::Child nobody = test::Child::start([&] {
    constexpr uid_t kNobody = 65534;
    if (setresgid(kNobody, kNobody, kNobody) != 0 || setresuid(kNobody, kNobody, kNobody) != 0) {
      return 3;
    }
    ToolRun one = run_tool("--json " + secret);
    if (one.exit_code != 1 || !one.json_ok || one.json["error"].text != "permission_denied") {
      return 4;
    }
    if (one.err.find("xproc-inspect: " + secret + ": permission_denied") == std::string::npos) {
      return 5;
    }
    ToolRun list = run_tool("--json --prefix " + prefix);
    if (list.exit_code != 0 || !list.json_ok) return 6;
    const Json* entry = find_segment(list.json, secret);
    if (entry == nullptr || (*entry)["error"].text != "permission_denied") return 7;
    return 0;
  });
  test::ChildStatus status = nobody.wait(30s);
  EXPECT_TRUE(status.ok()) << "exit " << status.exit_code;
}

}  // namespace
}  // namespace xproc::inspect
