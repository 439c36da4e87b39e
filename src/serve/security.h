// API keys (SHA-256 hashes, constant-time comparison), per-key token-bucket rate limiting and
// the CORS allow-list of `medq serve`.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace medq::serve {

// Equal-length strings compared without an early exit (timing does not reveal the position of
// the first differing byte).
bool constant_time_equal(const std::string& a, const std::string& b);

// Lowercase hex SHA-256 of a key (what the config stores).
std::string hash_api_key(const std::string& key);

class KeyStore {
 public:
  explicit KeyStore(std::map<std::string, std::string> name_to_hash) : keys_(std::move(name_to_hash)) {}
  bool enabled() const { return !keys_.empty(); }
  // The key's name when `presented` hashes to a configured digest, else "". Every configured
  // digest is compared (no early exit either).
  std::string authenticate(const std::string& presented) const;

 private:
  std::map<std::string, std::string> keys_;
};

// Token bucket per client id: `rate` tokens per second, up to `burst`.
class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  RateLimiter(double rate, double burst) : rate_(rate), burst_(burst > 0 ? burst : std::max(1.0, rate)) {}
  bool enabled() const { return rate_ > 0; }
  // Takes one token. Returns 0 when allowed, else the seconds until a token is available.
  double acquire(const std::string& client, Clock::time_point now = Clock::now());

 private:
  struct Bucket {
    double tokens;
    Clock::time_point last;
  };
  double rate_, burst_;
  std::mutex mu_;
  std::map<std::string, Bucket> buckets_;
};

// Whether `origin` is allowed by the list ("*" allows every origin).
bool cors_allowed(const std::vector<std::string>& allow, const std::string& origin);

}  // namespace medq::serve
