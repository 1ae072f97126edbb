// xproc-channel-idle: what a receiver blocked on an empty channel costs while nothing happens.
//
// A consumer process blocks in Channel::receive() with no deadline; the parent leaves it alone
// for S seconds (default 5) and then reads the consumer's CPU time (/proc/<pid>/schedstat) and
// its context switches (/proc/<pid>/status) over that window. Two cases:
//   no producer yet   nobody has sent on the channel: the receiver sleeps with no timer;
//   idle producer     a live producer has declared itself and sends nothing: the receiver wakes
//                     at growing intervals (2 ms doubling to kIdlePeerCheckPeriod) to see
//                     whether a producer still lives (docs/decisions/0034-channel-roles.md).
// Afterwards the parent sends one message, which the consumer must receive (the wait was real).
//
// Usage: xproc-channel-idle [seconds]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "xproc/channel/channel.h"
#include "xproc/sys/file.h"

namespace {

using namespace xproc;

struct Usage {
  double cpu_ms = 0;
  long switches = 0;
};

// A small /proc file, whole (std::FILE: g++ 12 warns about null dereferences in iostreams).
std::string read_text(const std::string& path) {
  std::string text;
  if (std::FILE* file = std::fopen(path.c_str(), "r")) {
    char chunk[512];
    std::size_t got = 0;
    while ((got = std::fread(chunk, 1, sizeof(chunk), file)) != 0) text.append(chunk, got);
    std::fclose(file);
  }
  return text;
}

// The number after `key` in `text` (0 when absent).
long number_after(const std::string& text, const std::string& key) {
  const std::size_t at = text.find(key);
  return at == std::string::npos ? 0 : std::strtol(text.c_str() + at + key.size(), nullptr, 10);
}

// CPU time on all CPUs (/proc/<pid>/schedstat, first field: nanoseconds run) and voluntary +
// involuntary context switches (/proc/<pid>/status).
Usage usage_of(pid_t pid) {
  Usage usage;
  const std::string proc = "/proc/" + std::to_string(pid);
  usage.cpu_ms =
      static_cast<double>(std::strtoll(read_text(proc + "/schedstat").c_str(), nullptr, 10)) / 1e6;
  const std::string status = read_text(proc + "/status");
  usage.switches = number_after(status, "\nvoluntary_ctxt_switches:") +
                   number_after(status, "nonvoluntary_ctxt_switches:");
  return usage;
}

channel::Channel adopt(const channel::Channel& parent) {
  return channel::Channel::adopt(sys::reopen(parent.segment().fd()).value()).value();
}

void measure(const char* name, bool with_producer, double seconds) {
  channel::ChannelConfig config;
  config.capacity_bytes = 4096;
  config.max_message = 64;
  channel::Channel channel = channel::Channel::create_anonymous(config).value();
  pid_t producer = -1;
  if (with_producer) {
    int declared[2];
    if (pipe(declared) != 0) std::exit(1);
    producer = fork();
    if (producer == 0) {
      channel::Channel mine = adopt(channel);
      mine->declare_producer();
      char one = 1;
      if (write(declared[1], &one, 1) != 1) _exit(1);
      for (;;) pause();  // alive, sends nothing
    }
    char one = 0;
    if (read(declared[0], &one, 1) != 1) std::exit(1);
  }
  const pid_t consumer = fork();
  if (consumer == 0) {
    channel::Channel mine = adopt(channel);
    std::string text;
    const std::error_code error = mine->receive_until(text, sync::Deadline::max());
    _exit(!error && text == "done" ? 0 : 1);
  }
  // Let the consumer get into its wait (spin, yields, park), then measure a quiet window.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const Usage before = usage_of(consumer);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const Usage after = usage_of(consumer);
  if (channel->send(std::span(reinterpret_cast<const std::byte*>("done"), 4))) std::exit(1);
  int status = 0;
  waitpid(consumer, &status, 0);
  if (producer > 0) {
    kill(producer, SIGKILL);
    waitpid(producer, nullptr, 0);
  }
  std::printf(
      "%-18s %10.3f %14.1f   %s\n", name, (after.cpu_ms - before.cpu_ms) / seconds,
      static_cast<double>(after.switches - before.switches) / seconds,
      WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "received after the window" : "FAILED");
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 5.0;
  std::printf("receiver blocked on an empty channel for %.1f s\n", seconds);
  std::printf("%-18s %10s %14s\n", "case", "CPU ms/s", "switches/s");
  measure("no producer yet", false, seconds);
  measure("idle producer", true, seconds);
  return 0;
}
