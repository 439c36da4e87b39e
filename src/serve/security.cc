#include "serve/security.h"

#include <algorithm>
#include <cmath>

#include "eval/runner.h"

namespace medq::serve {

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string hash_api_key(const std::string& key) { return eval::sha256_hex(key); }

std::string KeyStore::authenticate(const std::string& presented) const {
  if (presented.empty()) return "";
  const std::string h = hash_api_key(presented);
  std::string who;
  for (const auto& [name, digest] : keys_)
    if (constant_time_equal(h, digest) && who.empty()) who = name;
  return who;
}

double RateLimiter::acquire(const std::string& client, Clock::time_point now) {
  if (!enabled()) return 0;
  std::lock_guard<std::mutex> lk(mu_);
  auto it = buckets_.find(client);
  if (it == buckets_.end()) {
    // Bound the table: clients seen once (e.g. many addresses) must not grow it forever.
    if (buckets_.size() > 100000) buckets_.clear();
    it = buckets_.emplace(client, Bucket{burst_, now}).first;
  }
  Bucket& b = it->second;
  double dt = std::chrono::duration<double>(now - b.last).count();
  b.tokens = std::min(burst_, b.tokens + dt * rate_);
  b.last = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return 0;
  }
  return (1 - b.tokens) / rate_;
}

bool cors_allowed(const std::vector<std::string>& allow, const std::string& origin) {
  if (origin.empty()) return false;
  for (const auto& a : allow)
    if (a == "*" || a == origin) return true;
  return false;
}

}  // namespace medq::serve
