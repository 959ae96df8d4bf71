#include "fabric/worker/progress_reporter.h"

#include <algorithm>
#include <iostream>

namespace fabric::worker {

ProgressReporter::ProgressReporter(std::shared_ptr<RendezvousClient> client)
    : client_(std::move(client)), thread_([this] { run(); }) {}

ProgressReporter::~ProgressReporter() { stop(); }

void ProgressReporter::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void ProgressReporter::progress(const char* phase) noexcept {
  phase_.store(phase, std::memory_order_relaxed);
  last_progress_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  progress_.fetch_add(1, std::memory_order_relaxed);
  // The first heartbeat goes out at once (the heartbeat thread is woken for it): a rank that
  // froze (SIGSTOP) before the thread's first tick would otherwise never be watched. Never
  // sent from here: the training thread must not wait on the launcher.
  if (!started_.load(std::memory_order_relaxed) && !started_.exchange(true)) {
    {
      std::lock_guard lock(mutex_);
      kick_ = true;
    }
    wake_.notify_all();
  }
}

void ProgressReporter::step() noexcept {
  std::int64_t steps = steps_.load(std::memory_order_relaxed);
  steps_.store(steps < 0 ? 1 : steps + 1, std::memory_order_relaxed);  // one training thread
  progress("train");
}

void ProgressReporter::synchronizing() noexcept {
  const std::int64_t step = std::max<std::int64_t>(steps_.load(std::memory_order_relaxed), 0);
  if (step == last_arrival_step_) return;  // gradient accumulation: the step's first backward counts
  last_arrival_step_ = step;
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const std::uint64_t written = arrivals_written_.load(std::memory_order_relaxed);
  ArrivalSlot& slot = arrivals_[written % kArrivals];
  slot.sequence.fetch_add(1, std::memory_order_relaxed);  // odd: being written
  std::atomic_thread_fence(std::memory_order_release);
  slot.step.store(step, std::memory_order_relaxed);
  slot.unix_nanos.store(now, std::memory_order_relaxed);
  slot.sequence.fetch_add(1, std::memory_order_release);
  arrivals_written_.store(written + 1, std::memory_order_release);
}

std::vector<StepArrival> ProgressReporter::recent_arrivals() const {
  const std::uint64_t written = arrivals_written_.load(std::memory_order_acquire);
  const std::uint64_t first = written > kArrivals ? written - kArrivals : 0;
  std::vector<StepArrival> arrivals;
  arrivals.reserve(written - first);
  for (std::uint64_t i = first; i < written; ++i) {
    const ArrivalSlot& slot = arrivals_[i % kArrivals];
    const std::uint32_t before = slot.sequence.load(std::memory_order_acquire);
    StepArrival arrival{.step = slot.step.load(std::memory_order_relaxed),
                        .unix_nanos = slot.unix_nanos.load(std::memory_order_relaxed)};
    std::atomic_thread_fence(std::memory_order_acquire);
    // Overwritten meanwhile (a newer step in the slot) or half written: skip it.
    if (before % 2 != 0 || slot.sequence.load(std::memory_order_relaxed) != before) continue;
    arrivals.push_back(arrival);
  }
  return arrivals;
}

std::optional<std::int64_t> ProgressReporter::steps() const noexcept {
  const std::int64_t steps = steps_.load(std::memory_order_relaxed);
  return steps < 0 ? std::nullopt : std::optional(steps);
}

void ProgressReporter::samples(std::int64_t count) noexcept {
  samples_.fetch_add(count, std::memory_order_relaxed);
}

void ProgressReporter::metrics(const std::map<std::string, double>& scalars) {
  std::lock_guard lock(metrics_mutex_);
  for (const auto& [name, value] : scalars) {
    std::string key = name.substr(0, kMetricNameBytes);
    if (metrics_.size() >= kMetricNames && !metrics_.contains(key)) continue;
    metrics_[std::move(key)] = value;
  }
}

ProgressReporter::Rates ProgressReporter::rates(const std::vector<Reading>& readings) {
  if (readings.size() < 2) return {};
  const Reading& first = readings.front();
  const Reading& last = readings.back();
  const double seconds = std::chrono::duration<double>(last.time - first.time).count();
  if (seconds <= 0) return {};
  return {.steps_per_second = static_cast<double>(last.steps - first.steps) / seconds,
          .samples_per_second = static_cast<double>(last.samples - first.samples) / seconds};
}

ProgressReporter::Busy::Busy(ProgressReporter* reporter, const char* phase) : reporter_(reporter) {
  reporter_->progress(phase);
  reporter_->busy_.fetch_add(1, std::memory_order_relaxed);
}

ProgressReporter::Busy::~Busy() {
  if (reporter_ != nullptr) reporter_->busy_.fetch_sub(1, std::memory_order_relaxed);
}

void ProgressReporter::run() {
  std::uint64_t reported = 0;  // the progress count of the last heartbeat sent
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait_for(lock, interval_, [this] { return stopping_ || kick_; });
    if (stopping_) return;
    kick_ = false;
    const std::uint64_t progress = progress_.load(std::memory_order_relaxed);
    if (progress == reported && busy_.load(std::memory_order_relaxed) == 0) continue;  // nothing to vouch for
    reported = progress;
    lock.unlock();
    send();
    lock.lock();
  }
}

void ProgressReporter::send() {
  try {
    using std::chrono::steady_clock;
    const steady_clock::time_point last_progress(
        steady_clock::duration(last_progress_ns_.load(std::memory_order_relaxed)));
    const auto since_progress =
        busy_.load(std::memory_order_relaxed) > 0
            ? std::chrono::milliseconds(0)
            : std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - last_progress);
    Heartbeat beat{.step = steps(),
                   .phase = phase_.load(std::memory_order_relaxed),
                   .since_progress = since_progress,
                   .arrivals = recent_arrivals(),
                   .samples = samples_.load(std::memory_order_relaxed)};
    // The window keeps one reading older than kRateWindow, so the rate spans the whole of it.
    const steady_clock::time_point now = steady_clock::now();
    readings_.push_back({.time = now, .steps = beat.step.value_or(0), .samples = beat.samples});
    while (readings_.size() > 2 && now - readings_[1].time >= kRateWindow) readings_.erase(readings_.begin());
    const Rates measured = rates(readings_);
    beat.steps_per_second = measured.steps_per_second;
    beat.samples_per_second = measured.samples_per_second;
    {
      std::lock_guard lock(metrics_mutex_);
      beat.metrics = metrics_;
    }
    const HeartbeatReply reply = client_->heartbeat(beat);
    sent_.fetch_add(1, std::memory_order_relaxed);
    if (reply.stop_requested && !stop_requested_.exchange(true)) {
      std::cerr << "fabricd asks this rank to stop: " << reply.stop_reason << std::endl;
    }
    if (reply.interval.count() > 0) {
      std::lock_guard lock(mutex_);
      interval_ = reply.interval;
    }
  } catch (const RendezvousError& error) {
    // A stale or forgotten rank is about to be killed; fabricd going away kills us too.
    // Either way there is nothing to do but say so once and keep the training thread going.
    static std::once_flag said;
    std::call_once(said, [&] { std::cerr << "heartbeat not delivered: " << error.what() << std::endl; });
  }
}

}  // namespace fabric::worker
