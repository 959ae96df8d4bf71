// ProgressReporter: the heartbeats that let fabricd tell a hung rank from a slow one.
//
// The training thread only records progress (progress(), step(): a clock read and relaxed
// atomics, no call, no lock); a background thread sends a Heartbeat when there was progress
// since the last one, at the interval fabricd asks for, saying how long ago the last
// progress was (so fabricd times a silence from the hang itself, not from the next tick). So a rank stuck in an endless loop, a
// deadlock or SIGSTOP sends nothing, and fabricd declares it hung after its
// heartbeat timeout, without any help from the stuck rank. Phases that legitimately make
// no progress for a while but are not stuck (waiting for peers in a collective, writing a
// checkpoint) hold a Busy guard, during which heartbeats continue.
//
// Heartbeats start with the first progress (the training loop; that first one is sent at
// once), so a long setup before it is never mistaken for a hang.
// A rank frozen whole (SIGSTOP) is seen as silent from its last heartbeat, which may be up
// to one interval before it froze.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include <array>

#include "fabric/worker/rendezvous_client.h"

namespace fabric::worker {

class ProgressReporter {
 public:
  explicit ProgressReporter(std::shared_ptr<RendezvousClient> client);
  ~ProgressReporter();  // stop()s
  // Stops the heartbeat thread (after the heartbeat in flight, if any). Idempotent.
  void stop();
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  // One unit of progress in `phase` (a string literal: "train", "validate", ...).
  void progress(const char* phase) noexcept;
  // An optimizer step was taken (reported as the heartbeat's step).
  void step() noexcept;
  // The rank reached the gradient synchronization of the current step (backward()); the
  // first call per step is timed and sent with the next heartbeats (StepArrival), so that
  // fabricd can tell which rank the others wait for. A clock read and relaxed atomics.
  void synchronizing() noexcept;
  // The arrivals kept (the last kArrivals steps), oldest first.
  std::vector<StepArrival> recent_arrivals() const;
  static constexpr std::size_t kArrivals = 32;
  // The number of steps so far; nullopt before the first.
  std::optional<std::int64_t> steps() const noexcept;
  // `count` more samples went through a training forward (a relaxed atomic add).
  void samples(std::int64_t count) noexcept;
  // The latest logged scalars (fabric.log); sent with every heartbeat. Takes a lock: logging
  // is at most once a step. Beyond kMetricNames names, new ones are dropped; names are cut
  // to kMetricNameBytes.
  void metrics(const std::map<std::string, double>& scalars);
  static constexpr std::size_t kMetricNames = 16;
  static constexpr std::size_t kMetricNameBytes = 64;

  // Steps and samples per second over the last kRateWindow of (steady time, steps, samples)
  // readings, which the heartbeat thread takes at each heartbeat. Pure, for tests.
  struct Reading {
    std::chrono::steady_clock::time_point time;
    std::int64_t steps = 0;
    std::int64_t samples = 0;
  };
  struct Rates {
    double steps_per_second = 0;
    double samples_per_second = 0;
  };
  static constexpr std::chrono::seconds kRateWindow{10};
  static Rates rates(const std::vector<Reading>& readings);

  // While a Busy lives, heartbeats go on without progress.
  class Busy {
   public:
    explicit Busy(ProgressReporter* reporter, const char* phase);
    ~Busy();
    Busy(Busy&& other) noexcept : reporter_(std::exchange(other.reporter_, nullptr)) {}
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;
    Busy& operator=(Busy&&) = delete;

   private:
    ProgressReporter* reporter_;
  };
  Busy busy(const char* phase) { return Busy(this, phase); }

  // Whether fabricd asked the rank to finish cleanly (a heartbeat's stop_requested).
  bool stop_requested() const noexcept { return stop_requested_.load(std::memory_order_relaxed); }
  // How many heartbeats were sent (for tests and diagnostics).
  std::int64_t heartbeats_sent() const noexcept { return sent_.load(std::memory_order_relaxed); }

 private:
  void run();
  void send();

  std::shared_ptr<RendezvousClient> client_;
  std::atomic<std::uint64_t> progress_{0};
  std::atomic<std::int64_t> last_progress_ns_{0};  // steady_clock, of the last progress()
  std::atomic<std::int64_t> steps_{-1};
  std::atomic<const char*> phase_{"setup"};
  std::atomic<int> busy_{0};
  std::atomic<bool> started_{false};  // the first heartbeat was sent
  std::atomic<bool> stop_requested_{false};
  std::atomic<std::int64_t> sent_{0};
  std::atomic<std::int64_t> samples_{0};

  std::mutex metrics_mutex_;
  std::map<std::string, double> metrics_;  // guarded by metrics_mutex_
  std::vector<Reading> readings_;          // the heartbeat thread's, within kRateWindow

  // A ring of the latest arrivals, written by the training thread alone and read by the
  // heartbeat thread: each slot is a seqlock (an odd sequence while it is being written).
  struct ArrivalSlot {
    std::atomic<std::uint32_t> sequence{0};
    std::atomic<std::int64_t> step{0};
    std::atomic<std::int64_t> unix_nanos{0};
  };
  std::array<ArrivalSlot, kArrivals> arrivals_;
  std::atomic<std::uint64_t> arrivals_written_{0};
  std::int64_t last_arrival_step_ = -1;  // training thread only

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;                                            // guarded by mutex_
  bool kick_ = false;  // send now: the first progress happened; guarded by mutex_
  std::chrono::milliseconds interval_{std::chrono::milliseconds(200)};  // until fabricd says
  std::thread thread_;
};

}  // namespace fabric::worker
