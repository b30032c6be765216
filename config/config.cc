// SPDX-License-Identifier: Apache-2.0
// Turns a YAML document or file into a Config, collecting every problem in one pass (the
// reader itself is loader.cc and sections.cc).

#include "config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "config/loader.h"

namespace popbridge::config {
namespace {

using detail::Loader;
using detail::quoted;

// A config file is a few KiB; anything far larger is a wrong path (a log, a binary).
constexpr std::size_t kMaxFileBytes = 1024 * 1024;

// Where the first node of a document sits; the rest of the events are of no interest.
class FirstNodeMark : public YAML::EventHandler {
 public:
  std::optional<YAML::Mark> mark;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { note(m); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { note(m); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                const std::string&) override {
    note(m);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    note(m);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    note(m);
  }
  void OnMapEnd() override {}

 private:
  void note(const YAML::Mark& m) {
    if (!mark) {
      mark = m;
    }
  }
};

// The position of a second document in `text`, or nullopt when there is only one. Stops
// after the second document, so yaml-cpp's endless stream of phantom documents cannot hang it.
std::optional<YAML::Mark> second_document(const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  FirstNodeMark first;
  if (!parser.HandleNextDocument(first)) {
    return std::nullopt;
  }
  FirstNodeMark second;
  if (!parser.HandleNextDocument(second)) {
    return std::nullopt;
  }
  return second.mark.value_or(YAML::Mark::null_mark());
}

}  // namespace

std::string Diagnostic::to_string(std::string_view source) const {
  std::string out(source);
  if (line > 0) {
    out += ":" + std::to_string(line);
  }
  if (!out.empty()) {
    out += ": ";
  }
  if (!key_path.empty()) {
    out += key_path + ": ";
  }
  return out + message;
}

LoadResult load_config_string(std::string_view yaml) {
  // yaml-cpp reports problems by throwing; nothing of that may reach the caller.
  try {
    const std::string text(yaml);
    // YAML::LoadAll would be the obvious call, but in yaml-cpp 0.7 it loops forever, allocating,
    // on a stray ',' (jbeder/yaml-cpp#1040, fixed upstream after 0.7). Load reads one document;
    // a second, bounded pass only asks whether anything follows it.
    const YAML::Node root = YAML::Load(text);
    if (const std::optional<YAML::Mark> more = second_document(text)) {
      LoadResult result;
      result.errors.push_back(Diagnostic{"", more->is_null() ? 0 : more->line + 1,
                                         "expected a single YAML document, but more follows"});
      return result;
    }
    return Loader().run(root);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp gives this one the message "bad file", which helps nobody.
    LoadResult result;
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    result.errors.push_back(Diagnostic{"", line, "invalid YAML: nested too deeply"});
    return result;
  } catch (const YAML::Exception& e) {
    LoadResult result;
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    result.errors.push_back(Diagnostic{"", line, "invalid YAML: " + e.msg});
    return result;
  } catch (const std::exception& e) {
    LoadResult result;
    result.errors.push_back(Diagnostic{"", 0, std::string("cannot load: ") + e.what()});
    return result;
  }
}

LoadResult load_config_file(const std::string& path) {
  const auto fail = [&](const std::string& reason) {
    LoadResult result;
    result.errors.push_back(
        Diagnostic{"", 0, "file " + quoted(path) + " is not readable: " + reason});
    return result;
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    return fail(std::generic_category().message(errno));
  }
  std::string text;
  std::string reason;
  char buffer[16 * 1024];
  while (reason.empty()) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      reason = std::generic_category().message(errno);
    } else if (n == 0) {
      break;
    } else if (text.size() + static_cast<std::size_t>(n) > kMaxFileBytes) {
      reason = "larger than 1 MiB, which no config file needs";
    } else {
      text.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  if (!reason.empty()) {
    return fail(reason);
  }
  return load_config_string(text);
}

}  // namespace popbridge::config
