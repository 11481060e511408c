// protattn server: the hand-over of a job between the inference thread and its network thread.
#include "job.hpp"

namespace protattn::server {

void Job::complete(Status s) {
  {
    std::lock_guard<std::mutex> lock(m_);
    status = std::move(s);
    done_ = true;
  }
  cv_.notify_all();
}

bool Job::wait_until(Clock::time_point t) {
  std::unique_lock<std::mutex> lock(m_);
  return cv_.wait_until(lock, t, [&] { return done_; });
}

bool Job::done() const {
  std::lock_guard<std::mutex> lock(m_);
  return done_;
}

}  // namespace protattn::server
