// SPDX-License-Identifier: Apache-2.0
#include "proxy/identity/password_check.h"

#include <crypt.h>
#include <openssl/crypto.h>

#include <cstring>

namespace popbridge::proxy {
namespace {

// A valid SHA-512 crypt hash of a random string: what an unknown user is checked against
// when the caller has no real hash of the same kind to offer.
constexpr const char* kDummyHash =
    "$6$popbridgedummy$m6Yk.TcZwG46hQnRU3yhYPYYHnKFXJDNb3wDhWEyu8ZJoFYVI/"
    "W1BYvGyPzYXKcfMHXVRdKqt7cXQqyFujef8/";

}  // namespace

struct PasswordCheck::Job {
  uv_work_t request{};
  PasswordCheck* owner = nullptr;
  std::string hash;
  protocol::Secret password;
  bool known = false;
  bool matches = false;
  Callback done;
};

PasswordCheck::~PasswordCheck() {
  if (pending_ != nullptr) {
    // The pool may be running it now; it frees itself in the after-work callback.
    pending_->owner = nullptr;
  }
}

void PasswordCheck::start(std::string hash, std::string stand_in, const protocol::Secret& password,
                          Callback done) {
  auto job = std::make_unique<Job>();
  job->owner = this;
  job->known = !hash.empty();
  job->hash = job->known ? std::move(hash) : stand_in.empty() ? kDummyHash : std::move(stand_in);
  job->password = password;
  job->done = std::move(done);
  job->request.data = job.get();
  auto work = [](uv_work_t* request) noexcept {
    auto* job = static_cast<Job*>(request->data);
    crypt_data data{};
    std::string password(job->password.view());
    const char* result = crypt_rn(password.c_str(), job->hash.c_str(), &data, sizeof(data));
    protocol::wipe(password.data(), password.size());
    // libxcrypt returns null or a string starting with '*' on failure.
    job->matches = job->known && result != nullptr && result[0] != '*' &&
                   std::strlen(result) == job->hash.size() &&
                   CRYPTO_memcmp(result, job->hash.data(), job->hash.size()) == 0;
    protocol::wipe(&data, sizeof(data));
  };
  auto after = [](uv_work_t* request, int) noexcept {
    std::unique_ptr<Job> job(static_cast<Job*>(request->data));
    if (job->owner != nullptr) {
      job->owner->pending_ = nullptr;
      job->done(job->matches);
    }
  };
  if (uv_queue_work(loop_, &job->request, work, after) == 0) {
    pending_ = job.release();
  }
}

}  // namespace popbridge::proxy
