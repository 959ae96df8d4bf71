// One TensorBoard event file: serialized Event messages framed as TFRecords
// (uint64 length, masked CRC-32C of the length, data, masked CRC-32C of the data, all
// little-endian), named "events.out.tfevents.<seconds>.<host>.<pid>.<n><suffix>" like
// SummaryWriter's. The first record is the file_version event. Owns the open file.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

namespace fabric::loggers {

struct EventFileOptions {
  int max_queue = 10;                    // flush once this many events are pending
  std::chrono::seconds flush_secs{120};  // or on the first event this long after the last flush
  std::string filename_suffix;
};

class EventFileWriter {
 public:
  // Creates the file in `log_dir` (which must exist) and writes the file_version event.
  EventFileWriter(const std::string& log_dir, EventFileOptions options);
  // Closes the file; a failure is logged as a warning (call close() to have it thrown).
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  void add_event(std::string_view serialized_event);
  void flush();
  // Flushes and closes; later calls to add_event throw.
  void close();
  const std::string& path() const { return path_; }

 private:
  void write(std::string_view bytes);

  std::string path_;
  EventFileOptions options_;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file_;
  int pending_ = 0;
  std::chrono::steady_clock::time_point last_flush_;
};

// One TFRecord around `data`.
std::string tfrecord(std::string_view data);

// Seconds since the Unix epoch, as Event.wall_time holds it.
double wall_time_now();

}  // namespace fabric::loggers
