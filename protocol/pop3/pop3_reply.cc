// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/pop3_reply.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace popbridge::protocol {

namespace {

// RFC 2449 §4: the first line of a response is at most 512 octets including its CRLF.
constexpr std::size_t kMaxReplyLine = 512;

std::string_view code_text(RespCode code) {
  switch (code) {
    case RespCode::kNone:
      return {};
    case RespCode::kAuth:
      return "[AUTH]";
    case RespCode::kSysTemp:
      return "[SYS/TEMP]";
    case RespCode::kSysPerm:
      return "[SYS/PERM]";
    case RespCode::kInUse:
      return "[IN-USE]";
    case RespCode::kLoginDelay:
      return "[LOGIN-DELAY]";
  }
  return {};
}

std::string status_line(std::string_view status, std::string_view code, std::string_view text) {
  std::string line;
  line.reserve(kMaxReplyLine);
  line.append(status);
  if (!code.empty()) {
    line.push_back(' ');
    line.append(code);
  }
  const std::size_t room = kMaxReplyLine - 2 - line.size() - 1;  // CRLF, the space
  if (!text.empty()) {
    if (text.size() > room) {
      std::size_t cut = room;
      // Do not leave half a UTF-8 sequence (an upstream's message may be UTF-8).
      while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
        --cut;
      }
      text = text.substr(0, cut);
    }
    line.push_back(' ');
    const std::size_t text_start = line.size();
    line.append(text);
    // Text may come from the upstream; a CR or LF in it would end the reply early and
    // let the rest pass as another response.
    for (std::size_t i = text_start; i < line.size(); ++i) {
      const auto octet = static_cast<unsigned char>(line[i]);
      if (octet < 0x20 || octet == 0x7f) {
        line[i] = ' ';
      }
    }
  }
  line.append("\r\n");
  return line;
}

}  // namespace

std::string ok_reply(std::string_view text) { return status_line("+OK", {}, text); }

std::string err_reply(RespCode code, std::string_view text) {
  return status_line("-ERR", code_text(code), text);
}

void DotStuffer::feed(std::string_view chunk, std::string& out) {
  if (chunk.empty()) {
    return;
  }
  octets_ += chunk.size();
  const std::size_t first_out = out.size();
  // Look for dots, not line ends: a dot needs stuffing only right after a LF (or at the
  // start of a chunk that starts a line), and dots are far rarer than lines (base64, the
  // bulk of most mail, has none), so most chunks are copied whole after one scan.
  const char* const begin = chunk.data();
  const char* const end = begin + chunk.size();
  const char* run = begin;
  const char* p = begin;
  while (p < end) {
    const auto* dot =
        static_cast<const char*>(std::memchr(p, '.', static_cast<std::size_t>(end - p)));
    if (dot == nullptr) {
      break;
    }
    if (dot == begin ? at_line_start_ : dot[-1] == '\n') {
      out.append(run, dot);
      out.push_back('.');
      run = dot;
    }
    p = dot + 1;
  }
  out.append(run, end);
  at_line_start_ = end[-1] == '\n';
  if (replace_nuls_) {
    std::replace(out.begin() + static_cast<std::ptrdiff_t>(first_out), out.end(), '\0', '\x80');
  }
}

void DotStuffer::finish(std::string& out) {
  if (!at_line_start_) {
    out.append("\r\n");
  }
  out.append(".\r\n");
  at_line_start_ = true;
}

void DotStuffer::finish_with_empty_line(std::string& out) {
  if (!at_line_start_) {
    out.append("\r\n");
  }
  out.append("\r\n.\r\n");
  at_line_start_ = true;
}

std::string_view TopFilter::take(std::string_view chunk) {
  std::size_t i = 0;
  const std::size_t size = chunk.size();
  while (i < size && !done_) {
    if (in_body_) {
      if (body_lines_left_ == 0) {
        done_ = true;
        break;
      }
      const auto* lf = static_cast<const char*>(std::memchr(chunk.data() + i, '\n', size - i));
      if (lf == nullptr) {
        i = size;
        break;
      }
      i = static_cast<std::size_t>(lf - chunk.data()) + 1;
      if (--body_lines_left_ == 0) {
        done_ = true;
      }
      continue;
    }
    const char c = chunk[i];
    if ((at_line_start_ || only_cr_) && c == '\n') {
      // The empty line that ends the header (CRLF, or a bare LF in a sloppy message).
      ++i;
      in_body_ = true;
      at_line_start_ = true;
      only_cr_ = false;
      done_ = body_lines_left_ == 0;
      continue;
    }
    if (at_line_start_ && c == '\r') {
      // Decided by the next octet, which may come in the next chunk.
      ++i;
      at_line_start_ = false;
      only_cr_ = true;
      continue;
    }
    at_line_start_ = false;
    only_cr_ = false;
    const auto* lf = static_cast<const char*>(std::memchr(chunk.data() + i, '\n', size - i));
    if (lf == nullptr) {
      i = size;
      break;
    }
    i = static_cast<std::size_t>(lf - chunk.data()) + 1;
    at_line_start_ = true;
  }
  return chunk.substr(0, i);
}

}  // namespace popbridge::protocol
