#include "release_later.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace nv {
namespace {

struct Queue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;
  bool started = false;
};
// Never destroyed: its thread waits on it until the process ends.
Queue& gQueue = *new Queue;

void Run() {
  std::unique_lock<std::mutex> lock(gQueue.mu);
  for (;;) {
    gQueue.cv.wait(lock, [] { return !gQueue.jobs.empty(); });
    std::function<void()> job = std::move(gQueue.jobs.front());
    gQueue.jobs.pop_front();
    lock.unlock();
    job();
    job = nullptr;  // what the job held goes here too, not under the lock
    lock.lock();
  }
}

}  // namespace

void ReleaseLater(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(gQueue.mu);
    gQueue.jobs.push_back(std::move(job));
    if (!gQueue.started) {
      std::thread(Run).detach();
      gQueue.started = true;
    }
  }
  gQueue.cv.notify_one();
}

}  // namespace nv
