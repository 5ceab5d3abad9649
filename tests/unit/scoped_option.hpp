// Sets a runtime option (a field of g_options) for the scope of a test.
#pragma once

namespace iso {

template <class T>
class ScopedOption {
 public:
  ScopedOption(T& option, T value) : option_(option), saved_(option) { option_ = value; }
  ~ScopedOption() { option_ = saved_; }
  ScopedOption(const ScopedOption&) = delete;
  ScopedOption& operator=(const ScopedOption&) = delete;

 private:
  T& option_;
  T saved_;
};

}  // namespace iso
