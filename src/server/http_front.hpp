// protattn server: the HTTP/REST front (KServe v2 JSON and the binary tensor extension).
#pragma once
#include <memory>
#include <string>

#include "service.hpp"

namespace protattn::server {

class HttpFront {
 public:
  explicit HttpFront(Service& service);
  ~HttpFront();
  // Binds host:port (throws Error when it cannot); returns the bound port.
  int bind(const std::string& host, int port);
  // Accepts and serves until stop(); returns once every connection's handler has finished.
  void serve();
  // Closes the listening socket; requests being served are still answered.
  void stop();
  bool running() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace protattn::server
