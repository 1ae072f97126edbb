#pragma once
// JsonWriter: appends compact JSON (RFC 8259) to a string, for xproc-inspect --json. Field names
// and their meaning are documented in docs/tools/xproc-inspect.md.
//
// Not thread-safe (a value). Never fails: misuse (a value where a key is due) is a programming
// error of the tool, caught by its tests, not reported at run time.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace xproc::inspect {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  void begin_object() { open('{'); }
  void end_object() { close('}'); }
  void begin_array() { open('['); }
  void end_array() { close(']'); }

  // The next value belongs to `name` (inside an object).
  void key(std::string_view name) {
    separate();
    quoted(name);
    out_ += ':';
    after_key_ = true;
  }

  void value(std::string_view text) {
    separate();
    quoted(text);
  }
  void value(const char* text) { value(std::string_view(text)); }
  void value(bool flag) {
    separate();
    out_ += flag ? "true" : "false";
  }
  void value(std::uint64_t number) {
    separate();
    out_ += std::to_string(number);
  }
  void value(std::int64_t number) {
    separate();
    out_ += std::to_string(number);
  }
  void value(std::uint32_t number) { value(std::uint64_t{number}); }
  void value(int number) { value(std::int64_t{number}); }
  void null() {
    separate();
    out_ += "null";
  }

  template <class T>
  void field(std::string_view name, const T& v) {
    key(name);
    value(v);
  }

 private:
  void open(char bracket) {
    separate();
    out_ += bracket;
    first_.push_back(true);
  }
  void close(char bracket) {
    if (!first_.empty()) first_.pop_back();
    out_ += bracket;
  }
  // A comma before every element but the first of its container; nothing after a key.
  void separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (first_.empty()) return;
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
  void quoted(std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    out_ += '"';
    for (char c : text) {
      const auto byte = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out_ += '\\';
        out_ += c;
      } else if (c == '\n') {
        out_ += "\\n";
      } else if (byte < 0x20 || byte >= 0x7f) {
        // Control bytes, and any non-ASCII byte (names are ASCII; OS messages may not be valid
        // UTF-8): escaped so the output is always valid JSON.
        out_ += "\\u00";
        out_ += kHex[byte >> 4];
        out_ += kHex[byte & 0xf];
      } else {
        out_ += c;
      }
    }
    out_ += '"';
  }

  std::string& out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

}  // namespace xproc::inspect
